// defines: herd_write_text_atomic, herd_sync_directory
//
// Files that must never be seen half-written (configs, tokenizers, checkpoints): written to a
// temporary name beside the target, fsynced, renamed over it, and the directory fsynced, so a
// crash or a full disk leaves either the old file or the new one, and no stray temporary.
#ifndef HERD_FILEIO_H
#define HERD_FILEIO_H

// Writes `text` and a final newline to `path` atomically; HERD_EIO naming the path, the step
// (creating, writing, syncing, renaming) and the reason.
int herd_write_text_atomic(const char *path, const char *text);
// fsync of the directory holding `path` (file systems that cannot are not an error); 0 or -1
// with errno set.
int herd_sync_directory(const char *path);

#endif
