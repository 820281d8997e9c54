"""Near-duplicates and eval-set decontamination with perceptual hashes and FAISS.

- hashes: the hash columns of one image (`phash`, `phash256`, `phash256_trim`).
- neardup: clusters of 64-bit hashes within a Hamming radius; one representative each.
- evalsets: ImageFolder eval sets and their hashes (with mirrored and cropped variants).
- leaks: pool images that copy an eval image; the overlap table for evaluation.
- decide: both decisions over the pending rows of a run, as row updates.

Importing this package imports nothing heavy; FAISS, PIL and pyarrow load where used.
"""
