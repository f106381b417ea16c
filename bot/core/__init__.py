"""The Discord-free core: the job runner, the task service, images and the guarded downloader."""
