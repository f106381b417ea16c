"""The Discord edge: the client, its command tree, the reporter, and how it stays connected."""
