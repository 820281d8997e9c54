"""Contrastive CLIP training on datasets built by `pipeline`, from a laptop CPU to a Ray cluster.

`config` holds the one-screen `TrainConfig`, `data` streams manifest-selected shard rows, `models`
registers tiny open_clip configs, `loss` has CLIP and SigLIP losses, `train` the loop, `cli` the
`trainer` command. Model and loss code never import the loop; nothing heavy is imported here.
"""
