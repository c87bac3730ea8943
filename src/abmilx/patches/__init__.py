"""The patch data layer shared by tiling (which writes the store), feature extraction,
pretraining and E2E training (which read it): the LMDB patch store and its JPEG coding, chunked
reading for inference, and the GPU augmentations of patch batches."""
