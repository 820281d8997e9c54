"""The build's stages. Each module runs one stage over the dataset folder's parts."""
