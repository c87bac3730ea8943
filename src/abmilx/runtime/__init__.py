"""Process runtime shared by every command that runs torch: device, threads, mixed precision and
seeding. A package of its own so that feature extraction or pretraining need not load the
training engine to pick a device."""
