"""Generated training data for tests and benchmarks: no dataset folder, no decoding.

Sample i of the global stream belongs to class c(i) of `CLASSES`; its image is the class's fixed
pattern plus one of a bank of noise images, its text is [start, word(c), end]. That is learnable
(the loss falls), costs almost nothing to make, and depends on the global index alone, so rank r
of W at micro-batch n holds samples (n*W + r)*B ... +B: two ranks with batch B see exactly what one
process with batch 2B sees.
"""

import torch

CLASSES = 64
NOISE_BANK = 16
START, END, FIRST_WORD = 49406, 49407, 1000  # open_clip's BPE start/end ids; words after 1000


class SyntheticStream(torch.utils.data.IterableDataset):
    """Yields (images uint8 [B,3,S,S], tokens [B,L], meta) like ShardStream; meta['position'] is
    the number of micro-batches this rank has produced."""

    def __init__(
        self,
        *,
        batch_size: int,
        image_size: int,
        context_length: int,
        seed: int,
        rank: int,
        world_size: int,
        position: int = 0,
    ):
        super().__init__()
        self.batch_size, self.size, self.context = batch_size, image_size, context_length
        self.seed, self.rank, self.world_size, self.position = seed, rank, world_size, position
        self._cache = None

    def _tables(self):
        if self._cache is not None:
            return self._cache
        g = torch.Generator().manual_seed(self.seed)
        coarse = torch.randint(0, 256, (CLASSES, 3, 4, 4), generator=g, dtype=torch.uint8)
        patterns = torch.nn.functional.interpolate(coarse.float(), size=self.size, mode="nearest")
        noise = torch.randint(-40, 41, (NOISE_BANK, 3, self.size, self.size), generator=g)
        self._cache = patterns, noise.float()
        return self._cache

    def batch(self, n: int):
        """Micro-batch n of this rank."""
        patterns, noise = self._tables()
        first = (n * self.world_size + self.rank) * self.batch_size
        index = torch.arange(first, first + self.batch_size, dtype=torch.int64)
        mixed = (index * 2654435761 + self.seed) % (2**31)  # Knuth's multiplicative hash
        classes = mixed % CLASSES
        images = (patterns[classes] + noise[(mixed // CLASSES) % NOISE_BANK]).clamp(0, 255)
        tokens = torch.zeros(self.batch_size, self.context, dtype=torch.long)
        tokens[:, 0], tokens[:, 1], tokens[:, 2] = START, FIRST_WORD + classes, END
        return images.to(torch.uint8), tokens

    def __iter__(self):
        n = self.position
        while True:
            images, tokens = self.batch(n)
            n += 1
            yield images, tokens, {"worker": self.rank, "position": n, "corrupt": 0}
