// safetensors files: reading (mmap + a validated header) and writing (temp file, fsync, rename).
// See safetensors.h for the contract; the format is Hugging Face's
// (https://github.com/huggingface/safetensors, "Format").
//
// Decisions beyond the format's text:
// - The header is checked whole before any tensor byte is touched: every entry is an object with
//   exactly "dtype", "shape" and "data_offsets", byte lengths match dtype and shape (with overflow
//   checks), ranges lie in the data buffer, and the non-empty ranges tile it: no overlap, no hole,
//   no trailing bytes. Holes are rejected as Hugging Face's reader rejects them ("the byte buffer
//   needs to be entirely indexed"): a file we accept is a file `safetensors` loads. Zero-length
//   ranges overlap nothing and may sit anywhere in [0, data size].
// - Files are mapped copy-on-write (MAP_PRIVATE, PROT_READ | PROT_WRITE, the file opened
//   O_RDONLY): writing into a loaded tensor changes neither the file nor faults.
// - Tensors from a mapped file view the mapping when their first byte is aligned for their dtype;
//   files written by others may place an F32 after an odd-length U8 tensor, and such tensors are
//   copied into aligned storage instead. Tensors from an in-memory image (parse) are always
//   copies, so they never outlive the caller's buffer.
// - The mapping is shared by the file object and every storage viewing it; the last of them to go
//   unmaps it.
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"

enum { MAX_NAME_IN_MESSAGE = 200 };
static const uint64_t MAX_HEADER_SIZE = 100000000;  // Hugging Face's limit (100 MB)
static const char METADATA_KEY[] = "__metadata__";

static const struct {
  const char *name;
  herd_dtype dtype;
} DTYPES[] = {
    {"F32", HERD_F32}, {"BF16", HERD_BF16}, {"F16", HERD_F16}, {"I32", HERD_I32}, {"U8", HERD_U8},
};
// Valid in the format, not in herd (tensor.h): named as unsupported rather than unknown.
static const char *const UNSUPPORTED_DTYPES[] = {
    "F64",     "I64",     "U64",     "U32",     "I16",     "U16", "I8",  "BOOL",
    "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",  "C64",
};

// The mmap'd file, shared by the file object and the storages viewing it.
typedef struct mapping {
  void *base;
  size_t size;
  int refcount;  // atomic: tensors may be freed on any thread
} mapping;

typedef struct entry {
  const char *name;  // owned by the header JSON
  herd_dtype dtype;
  int ndim;
  int64_t shape[HERD_MAX_DIMS];
  uint64_t begin, end;  // in the data buffer
} entry;

struct herd_safetensors {
  json_t *header;
  json_t *metadata;     // borrowed from header; NULL when absent
  const uint8_t *data;  // the data buffer (after the header)
  size_t data_size;
  mapping *map;  // NULL for images held by the caller (parse)
  int count;
  entry *entries;  // (count) sorted by name
};

// ---------------------------------------------------------------- the mapping

static void mapping_retain(mapping *map) {
  __atomic_add_fetch(&map->refcount, 1, __ATOMIC_RELAXED);
}

static void mapping_release(mapping *map) {
  if (!map || __atomic_sub_fetch(&map->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
  munmap(map->base, map->size);
  free(map);
}

static void release_mapped_storage(herd_storage *storage) {
  mapping_release(storage->context);
}

// ---------------------------------------------------------------- header validation

static uint64_t read_u64_le(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static const char *dtype_file_name(herd_dtype dtype) {
  for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
    if (DTYPES[i].dtype == dtype) return DTYPES[i].name;
  return NULL;
}

// "[2, 3]" into buf.
static const char *shape_string(const int64_t *shape, int ndim, char *buf, size_t size) {
  size_t n = (size_t)snprintf(buf, size, "[");
  for (int i = 0; i < ndim && n < size; i++)
    n += (size_t)snprintf(buf + n, size - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
  if (n < size) snprintf(buf + n, size - n, "]");
  return buf;
}

static int parse_dtype(const char *origin, const char *name, json_t *value, herd_dtype *out) {
  if (!json_is_string(value))
    return herd_seterr(HERD_ECORRUPT, "%s: tensor '%.*s': dtype is not a string", origin,
                       MAX_NAME_IN_MESSAGE, name);
  const char *s = json_string_value(value);
  for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++) {
    if (strcmp(s, DTYPES[i].name) == 0) {
      *out = DTYPES[i].dtype;
      return 0;
    }
  }
  for (size_t i = 0; i < sizeof UNSUPPORTED_DTYPES / sizeof UNSUPPORTED_DTYPES[0]; i++) {
    if (strcmp(s, UNSUPPORTED_DTYPES[i]) == 0)
      return herd_seterr(HERD_ECORRUPT,
                         "%s: tensor '%.*s': unsupported dtype %s (herd reads F32, BF16, F16, "
                         "I32 and U8)",
                         origin, MAX_NAME_IN_MESSAGE, name, s);
  }
  return herd_seterr(HERD_ECORRUPT, "%s: tensor '%.*s': unknown dtype '%.40s'", origin,
                     MAX_NAME_IN_MESSAGE, name, s);
}

// A JSON integer >= 0, or an error naming `field`.
static int parse_count(const char *origin, const char *name, const char *field, json_t *value,
                       int64_t *out) {
  if (!json_is_integer(value))
    return herd_seterr(HERD_ECORRUPT, "%s: tensor '%.*s': %s holds a %s, not an integer", origin,
                       MAX_NAME_IN_MESSAGE, name, field,
                       json_is_real(value)     ? "fraction"
                       : json_is_string(value) ? "string"
                                               : "non-number");
  json_int_t v = json_integer_value(value);
  if (v < 0)
    return herd_seterr(HERD_ECORRUPT, "%s: tensor '%.*s': %s holds %lld, a negative number", origin,
                       MAX_NAME_IN_MESSAGE, name, field, (long long)v);
  *out = (int64_t)v;
  return 0;
}

static int parse_shape(const char *origin, const char *name, json_t *value, entry *e) {
  if (!json_is_array(value))
    return herd_seterr(HERD_ECORRUPT, "%s: tensor '%.*s': shape is not an array", origin,
                       MAX_NAME_IN_MESSAGE, name);
  size_t ndim = json_array_size(value);
  if (ndim > HERD_MAX_DIMS)
    return herd_seterr(HERD_ECORRUPT, "%s: tensor '%.*s': shape has %zu dims; herd supports %d",
                       origin, MAX_NAME_IN_MESSAGE, name, ndim, HERD_MAX_DIMS);
  e->ndim = (int)ndim;
  for (size_t i = 0; i < ndim; i++) {
    int status = parse_count(origin, name, "shape", json_array_get(value, i), &e->shape[i]);
    if (status) return status;
  }
  return 0;
}

static int parse_offsets(const char *origin, const char *name, json_t *value, entry *e) {
  if (!json_is_array(value) || json_array_size(value) != 2)
    return herd_seterr(HERD_ECORRUPT, "%s: tensor '%.*s': data_offsets is not [begin, end]", origin,
                       MAX_NAME_IN_MESSAGE, name);
  int64_t begin, end;
  int status = parse_count(origin, name, "data_offsets", json_array_get(value, 0), &begin);
  if (!status) status = parse_count(origin, name, "data_offsets", json_array_get(value, 1), &end);
  if (status) return status;
  if (end < begin)
    return herd_seterr(HERD_ECORRUPT,
                       "%s: tensor '%.*s': data_offsets [%lld, %lld] end before begin", origin,
                       MAX_NAME_IN_MESSAGE, name, (long long)begin, (long long)end);
  e->begin = (uint64_t)begin;
  e->end = (uint64_t)end;
  return 0;
}

// Checks that dtype and shape need exactly end - begin bytes. The product of the dims (zeros
// counted as ones) must fit in int64 bytes too, so strides of an empty tensor cannot overflow.
static int check_byte_length(const char *origin, const entry *e) {
  uint64_t limit = (uint64_t)INT64_MAX / herd_dtype_size(e->dtype);
  uint64_t numel = 1, bound = 1;
  char shape[128];
  for (int i = 0; i < e->ndim; i++) {
    uint64_t d = (uint64_t)e->shape[i];
    uint64_t nonzero = d ? d : 1;
    if (bound > limit / nonzero)
      return herd_seterr(HERD_ECORRUPT, "%s: tensor '%.*s': shape %s is too large", origin,
                         MAX_NAME_IN_MESSAGE, e->name,
                         shape_string(e->shape, e->ndim, shape, sizeof shape));
    bound *= nonzero;
    numel *= d;
  }
  uint64_t nbytes = numel * herd_dtype_size(e->dtype);
  if (nbytes != e->end - e->begin)
    return herd_seterr(HERD_ECORRUPT,
                       "%s: tensor '%.*s': data_offsets [%llu, %llu] do not match dtype %s and "
                       "shape %s (%llu bytes)",
                       origin, MAX_NAME_IN_MESSAGE, e->name, (unsigned long long)e->begin,
                       (unsigned long long)e->end, dtype_file_name(e->dtype),
                       shape_string(e->shape, e->ndim, shape, sizeof shape),
                       (unsigned long long)nbytes);
  return 0;
}

static int parse_entry(const char *origin, const char *name, json_t *value, size_t data_size,
                       entry *e) {
  e->name = name;
  if (name[0] == '\0') return herd_seterr(HERD_ECORRUPT, "%s: a tensor has an empty name", origin);
  if (!json_is_object(value))
    return herd_seterr(HERD_ECORRUPT, "%s: tensor '%.*s': entry is not an object", origin,
                       MAX_NAME_IN_MESSAGE, name);
  static const char *const FIELDS[] = {"dtype", "shape", "data_offsets"};
  for (int i = 0; i < 3; i++) {
    if (!json_object_get(value, FIELDS[i]))
      return herd_seterr(HERD_ECORRUPT, "%s: tensor '%.*s': missing field '%s'", origin,
                         MAX_NAME_IN_MESSAGE, name, FIELDS[i]);
  }
  if (json_object_size(value) != 3) {
    const char *key;
    json_t *field;
    json_object_foreach(value, key, field) {
      if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
        return herd_seterr(HERD_ECORRUPT, "%s: tensor '%.*s': unexpected field '%.40s'", origin,
                           MAX_NAME_IN_MESSAGE, name, key);
    }
  }
  int status = parse_dtype(origin, name, json_object_get(value, "dtype"), &e->dtype);
  if (!status) status = parse_shape(origin, name, json_object_get(value, "shape"), e);
  if (!status) status = parse_offsets(origin, name, json_object_get(value, "data_offsets"), e);
  if (!status) status = check_byte_length(origin, e);
  if (status) return status;
  if (e->end > data_size)
    return herd_seterr(HERD_ECORRUPT,
                       "%s: tensor '%.*s': data_offsets [%llu, %llu] run past the data buffer "
                       "(%zu bytes; truncated file?)",
                       origin, MAX_NAME_IN_MESSAGE, name, (unsigned long long)e->begin,
                       (unsigned long long)e->end, data_size);
  return 0;
}

static int check_metadata(const char *origin, json_t *metadata) {
  if (!json_is_object(metadata))
    return herd_seterr(HERD_ECORRUPT, "%s: __metadata__ is not an object", origin);
  const char *key;
  json_t *value;
  json_object_foreach(metadata, key, value) {
    if (!json_is_string(value))
      return herd_seterr(HERD_ECORRUPT, "%s: __metadata__ '%.*s' is not a string", origin,
                         MAX_NAME_IN_MESSAGE, key);
  }
  return 0;
}

static int compare_by_name(const void *a, const void *b) {
  return strcmp(((const entry *)a)->name, ((const entry *)b)->name);
}

static int compare_by_range(const void *a, const void *b) {
  const entry *x = *(const entry *const *)a, *y = *(const entry *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  return (x->end > y->end) - (x->end < y->end);
}

// The non-empty ranges, sorted by begin, must tile [0, data_size) exactly.
static int check_layout(const char *origin, const entry *entries, int count, size_t data_size) {
  const entry **ranges = malloc(((size_t)count + 1) * sizeof *ranges);
  if (!ranges) return herd_seterr(HERD_ENOMEM, "%s: out of memory", origin);
  int n = 0;
  for (int i = 0; i < count; i++)
    if (entries[i].end > entries[i].begin) ranges[n++] = &entries[i];
  qsort(ranges, (size_t)n, sizeof *ranges, compare_by_range);
  int status = 0;
  uint64_t covered = 0;
  for (int i = 0; i < n && !status; i++) {
    const entry *e = ranges[i];
    if (i > 0 && e->begin < covered) {
      const entry *p = ranges[i - 1];
      status = herd_seterr(
          HERD_ECORRUPT, "%s: tensors '%.*s' [%llu, %llu] and '%.*s' [%llu, %llu] overlap", origin,
          MAX_NAME_IN_MESSAGE, p->name, (unsigned long long)p->begin, (unsigned long long)p->end,
          MAX_NAME_IN_MESSAGE, e->name, (unsigned long long)e->begin, (unsigned long long)e->end);
    } else if (e->begin > covered) {
      status = herd_seterr(HERD_ECORRUPT,
                           "%s: data bytes [%llu, %llu) belong to no tensor (a hole before "
                           "tensor '%.*s')",
                           origin, (unsigned long long)covered, (unsigned long long)e->begin,
                           MAX_NAME_IN_MESSAGE, e->name);
    }
    covered = e->end;
  }
  if (!status && covered != data_size)
    status = herd_seterr(HERD_ECORRUPT,
                         "%s: the data buffer holds %zu bytes but the tensors cover %llu "
                         "(trailing bytes)",
                         origin, data_size, (unsigned long long)covered);
  free(ranges);
  return status;
}

static int too_short(const char *origin, size_t size) {
  if (size == 0) return herd_seterr(HERD_ECORRUPT, "%s: file is empty", origin);
  return herd_seterr(HERD_ECORRUPT, "%s: file is %zu bytes, too short for the 8-byte header size",
                     origin, size);
}

static int parse_header(herd_safetensors *file, const char *origin, const uint8_t *data,
                        size_t size) {
  if (size < 8) return too_short(origin, size);
  uint64_t header_size = read_u64_le(data);
  if (header_size < 2)
    return herd_seterr(HERD_ECORRUPT, "%s: header size %llu is too small for a JSON object", origin,
                       (unsigned long long)header_size);
  if (header_size > MAX_HEADER_SIZE)
    return herd_seterr(HERD_ECORRUPT, "%s: header size %llu exceeds the limit of %llu bytes",
                       origin, (unsigned long long)header_size,
                       (unsigned long long)MAX_HEADER_SIZE);
  if (header_size > size - 8)
    return herd_seterr(HERD_ECORRUPT,
                       "%s: header size %llu runs past the end of the file (%zu bytes; "
                       "truncated?)",
                       origin, (unsigned long long)header_size, size);

  json_error_t error;
  file->header =
      json_loadb((const char *)data + 8, (size_t)header_size, JSON_REJECT_DUPLICATES, &error);
  if (!file->header) {
    if (json_error_code(&error) == json_error_duplicate_key)
      return herd_seterr(HERD_ECORRUPT, "%s: header: a name appears twice (%s)", origin,
                         error.text);
    return herd_seterr(HERD_ECORRUPT, "%s: header is not valid JSON: %s (byte %d)", origin,
                       error.text, error.position);
  }
  if (!json_is_object(file->header))
    return herd_seterr(HERD_ECORRUPT, "%s: header is not a JSON object", origin);

  file->data = data + 8 + header_size;
  file->data_size = size - 8 - (size_t)header_size;
  size_t n = json_object_size(file->header);
  file->entries = calloc(n ? n : 1, sizeof *file->entries);
  if (!file->entries) return herd_seterr(HERD_ENOMEM, "%s: out of memory", origin);
  const char *name;
  json_t *value;
  json_object_foreach(file->header, name, value) {
    int status;
    if (strcmp(name, METADATA_KEY) == 0) {
      status = check_metadata(origin, value);
      file->metadata = value;
    } else {
      if (file->count == INT32_MAX)
        return herd_seterr(HERD_ECORRUPT, "%s: too many tensors", origin);
      status = parse_entry(origin, name, value, file->data_size, &file->entries[file->count++]);
    }
    if (status) return status;
  }
  qsort(file->entries, (size_t)file->count, sizeof *file->entries, compare_by_name);
  return check_layout(origin, file->entries, file->count, file->data_size);
}

// ---------------------------------------------------------------- reading

int herd_safetensors_parse(herd_safetensors **out, const uint8_t *data, size_t size,
                           const char *origin) {
  if (!out) return herd_seterr(HERD_EINVAL, "safetensors_parse: out is NULL");
  *out = NULL;
  if (!origin) origin = "<memory>";
  if (!data && size) return herd_seterr(HERD_EINVAL, "%s: data is NULL", origin);
  herd_safetensors *file = calloc(1, sizeof *file);
  if (!file) return herd_seterr(HERD_ENOMEM, "%s: out of memory", origin);
  int status = parse_header(file, origin, data, size);
  if (status) {
    herd_safetensors_close(file);
    return status;
  }
  *out = file;
  return 0;
}

int herd_safetensors_open(herd_safetensors **out, const char *path) {
  if (!out) return herd_seterr(HERD_EINVAL, "safetensors_open: out is NULL");
  *out = NULL;
  if (!path) return herd_seterr(HERD_EINVAL, "safetensors_open: path is NULL");
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return herd_seterr(errno == ENOENT ? HERD_ENOTFOUND : HERD_EIO, "%s: cannot open: %s", path,
                       strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return herd_seterr(HERD_EIO, "%s: cannot stat: %s", path, strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return herd_seterr(HERD_EIO, "%s: not a regular file", path);
  }
  size_t size = (size_t)st.st_size;
  if (size < 8) {
    close(fd);
    return too_short(path, size);
  }
  // Copy-on-write: writes into tensors viewing the file stay private and never fault.
  void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  int err = errno;
  close(fd);
  if (base == MAP_FAILED) return herd_seterr(HERD_EIO, "%s: cannot mmap: %s", path, strerror(err));
  mapping *map = malloc(sizeof *map);
  if (!map) {
    munmap(base, size);
    return herd_seterr(HERD_ENOMEM, "%s: out of memory", path);
  }
  *map = (mapping){.base = base, .size = size, .refcount = 1};
  herd_safetensors *file = NULL;
  int status = herd_safetensors_parse(&file, base, size, path);
  if (status) {
    mapping_release(map);
    return status;
  }
  file->map = map;
  *out = file;
  return 0;
}

void herd_safetensors_close(herd_safetensors *file) {
  if (!file) return;
  json_decref(file->header);
  free(file->entries);
  mapping_release(file->map);
  free(file);
}

int herd_safetensors_count(const herd_safetensors *file) {
  return file ? file->count : 0;
}

const char *herd_safetensors_name(const herd_safetensors *file, int index) {
  if (!file || index < 0 || index >= file->count) return NULL;
  return file->entries[index].name;
}

int herd_safetensors_find(const herd_safetensors *file, const char *name) {
  if (!file || !name) return -1;
  int lo = 0, hi = file->count - 1;
  while (lo <= hi) {
    int mid = lo + (hi - lo) / 2;
    int c = strcmp(name, file->entries[mid].name);
    if (c == 0) return mid;
    if (c < 0)
      hi = mid - 1;
    else
      lo = mid + 1;
  }
  return -1;
}

// A tensor viewing the mapping in place.
static int view_mapped(const herd_safetensors *file, const entry *e, herd_tensor **out) {
  herd_storage *storage = NULL;
  mapping_retain(file->map);
  int status = herd_storage_wrap(&storage, (void *)(file->data + e->begin), e->end - e->begin,
                                 HERD_CPU, release_mapped_storage, file->map);
  if (status) {
    mapping_release(file->map);
    return status;
  }
  status = herd_tensor_wrap(out, storage, 0, e->dtype, e->ndim, e->shape);
  herd_storage_release(storage);  // the tensor holds its own reference
  return status;
}

int herd_safetensors_tensor(const herd_safetensors *file, int index, herd_tensor **out) {
  if (!out) return herd_seterr(HERD_EINVAL, "safetensors_tensor: out is NULL");
  *out = NULL;
  if (!file) return herd_seterr(HERD_EINVAL, "safetensors_tensor: file is NULL");
  if (index < 0 || index >= file->count)
    return herd_seterr(HERD_EINVAL, "safetensors_tensor: index %d out of range [0, %d)", index,
                       file->count);
  const entry *e = &file->entries[index];
  const uint8_t *bytes = file->data + e->begin;
  size_t nbytes = (size_t)(e->end - e->begin);
  if (file->map && (uintptr_t)bytes % herd_dtype_size(e->dtype) == 0)
    return view_mapped(file, e, out);
  // Unaligned in the file, or an image the caller owns: an aligned copy.
  int status = herd_tensor_new(out, e->dtype, HERD_CPU, e->ndim, e->shape);
  if (status) return status;
  if (nbytes) memcpy(herd_tensor_data(*out), bytes, nbytes);
  return 0;
}

const char *herd_safetensors_metadata(const herd_safetensors *file, const char *key) {
  if (!file || !file->metadata || !key) return NULL;
  return json_string_value(json_object_get(file->metadata, key));
}

// ---------------------------------------------------------------- writing

typedef struct named {
  const char *name;
  const herd_tensor *tensor;
} named;

static int compare_named(const void *a, const void *b) {
  return strcmp(((const named *)a)->name, ((const named *)b)->name);
}

static int check_save_arguments(const char *path, int count, const char *const *names,
                                const herd_tensor *const *tensors, named *sorted) {
  for (int i = 0; i < count; i++) {
    const char *name = names[i];
    const herd_tensor *t = tensors[i];
    if (!name || !name[0]) return herd_seterr(HERD_EINVAL, "%s: tensor %d has no name", path, i);
    if (strcmp(name, METADATA_KEY) == 0)
      return herd_seterr(HERD_EINVAL, "%s: '%s' is reserved, not a tensor name", path, name);
    if (!t) return herd_seterr(HERD_EINVAL, "%s: tensor '%s' is NULL", path, name);
    if (!t->storage || t->storage->device != HERD_CPU)
      return herd_seterr(HERD_EINVAL, "%s: tensor '%s' is not a cpu tensor", path, name);
    if (!dtype_file_name(t->dtype))
      return herd_seterr(HERD_EINVAL, "%s: tensor '%s' has an unknown dtype %d", path, name,
                         (int)t->dtype);
    if (!herd_tensor_is_contiguous(t))
      return herd_seterr(HERD_EINVAL, "%s: tensor '%s' is not contiguous", path, name);
    sorted[i] = (named){name, t};
  }
  qsort(sorted, (size_t)count, sizeof *sorted, compare_named);
  for (int i = 1; i < count; i++) {
    if (strcmp(sorted[i - 1].name, sorted[i].name) == 0)
      return herd_seterr(HERD_EINVAL, "%s: tensor name '%s' given twice", path, sorted[i].name);
  }
  return 0;
}

// {"name": {"dtype": .., "shape": .., "data_offsets": ..}, "__metadata__": {..}}, data in
// `sorted` order.
static int build_header(json_t **out, const char *path, int count, const named *sorted,
                        int n_metadata, const char *const *keys, const char *const *values) {
  json_t *root = json_object();
  int ok = root != NULL;
  uint64_t offset = 0;
  for (int i = 0; i < count && ok; i++) {
    const herd_tensor *t = sorted[i].tensor;
    uint64_t nbytes = herd_tensor_nbytes(t);
    json_t *shape = json_array();
    ok = shape != NULL;
    for (int d = 0; d < t->ndim && ok; d++)
      ok = json_array_append_new(shape, json_integer(t->shape[d])) == 0;
    json_t *item =
        json_pack("{s:s, s:o, s:[I, I]}", "dtype", dtype_file_name(t->dtype), "shape", shape,
                  "data_offsets", (json_int_t)offset, (json_int_t)(offset + nbytes));
    if (!item || !ok) {
      json_decref(item);
      json_decref(root);
      return herd_seterr(HERD_EINVAL, "%s: cannot encode tensor '%s' (name not UTF-8?)", path,
                         sorted[i].name);
    }
    ok = json_object_set_new(root, sorted[i].name, item) == 0;
    if (!ok) {
      json_decref(root);
      return herd_seterr(HERD_EINVAL, "%s: cannot encode tensor name '%s' (not UTF-8?)", path,
                         sorted[i].name);
    }
    offset += nbytes;
  }
  if (ok && n_metadata > 0) {
    json_t *metadata = json_object();
    ok = metadata && json_object_set_new(root, METADATA_KEY, metadata) == 0;
    for (int i = 0; i < n_metadata && ok; i++) {
      if (!keys[i] || !values[i]) {
        json_decref(root);
        return herd_seterr(HERD_EINVAL, "%s: metadata entry %d is NULL", path, i);
      }
      if (json_object_get(metadata, keys[i])) {
        json_decref(root);
        return herd_seterr(HERD_EINVAL, "%s: metadata key '%s' given twice", path, keys[i]);
      }
      json_t *value = json_string(values[i]);
      if (!value || json_object_set_new(metadata, keys[i], value) != 0) {
        json_decref(root);
        return herd_seterr(HERD_EINVAL, "%s: cannot encode metadata '%s' (not UTF-8?)", path,
                           keys[i]);
      }
    }
  }
  if (!ok) {
    json_decref(root);
    return herd_seterr(HERD_ENOMEM, "%s: out of memory building the header", path);
  }
  *out = root;
  return 0;
}

// Writes all of buf; -1 with errno set on failure.
static int write_all(int fd, const void *buf, size_t size) {
  const uint8_t *p = buf;
  while (size > 0) {
    ssize_t n = write(fd, p, size > ((size_t)1 << 30) ? (size_t)1 << 30 : size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = ENOSPC;
      return -1;
    }
    p += n;
    size -= (size_t)n;
  }
  return 0;
}

// The 8-byte size, the header padded with spaces to a multiple of 8, then the tensor bytes.
static int write_file(int fd, const char *header, int count, const named *sorted) {
  size_t length = strlen(header);
  size_t padded = (length + 7) / 8 * 8;
  uint8_t size_le[8];
  for (int i = 0; i < 8; i++) size_le[i] = (uint8_t)((uint64_t)padded >> (8 * i));
  if (write_all(fd, size_le, 8) || write_all(fd, header, length) ||
      write_all(fd, "        ", padded - length))
    return -1;
  for (int i = 0; i < count; i++) {
    size_t nbytes = herd_tensor_nbytes(sorted[i].tensor);
    if (nbytes && write_all(fd, herd_tensor_data(sorted[i].tensor), nbytes)) return -1;
  }
  return 0;
}

int herd_safetensors_save(const char *path, int count, const char *const *names,
                          const herd_tensor *const *tensors, int n_metadata,
                          const char *const *metadata_keys, const char *const *metadata_values) {
  if (!path || !path[0]) return herd_seterr(HERD_EINVAL, "safetensors_save: no path");
  if (count < 0 || n_metadata < 0)
    return herd_seterr(HERD_EINVAL, "%s: negative tensor or metadata count", path);
  if (count > 0 && (!names || !tensors))
    return herd_seterr(HERD_EINVAL, "%s: names or tensors is NULL", path);
  if (n_metadata > 0 && (!metadata_keys || !metadata_values))
    return herd_seterr(HERD_EINVAL, "%s: metadata keys or values is NULL", path);

  named *sorted = malloc(((size_t)count + 1) * sizeof *sorted);
  if (!sorted) return herd_seterr(HERD_ENOMEM, "%s: out of memory", path);
  json_t *root = NULL;
  char *header = NULL, *temp = NULL;
  int status = check_save_arguments(path, count, names, tensors, sorted);
  if (!status)
    status = build_header(&root, path, count, sorted, n_metadata, metadata_keys, metadata_values);
  if (!status) {
    header = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    size_t temp_size = strlen(path) + 32;
    temp = malloc(temp_size);
    if (!header || !temp)
      status = herd_seterr(HERD_ENOMEM, "%s: out of memory", path);
    else if (strlen(header) + 7 > MAX_HEADER_SIZE)
      status = herd_seterr(HERD_EINVAL, "%s: the header would exceed %llu bytes", path,
                           (unsigned long long)MAX_HEADER_SIZE);
    else
      snprintf(temp, temp_size, "%s.tmp-%ld", path, (long)getpid());
  }
  if (!status) {
    int fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
      status = herd_seterr(HERD_EIO, "%s: cannot create %s: %s", path, temp, strerror(errno));
    } else {
      const char *step = NULL;
      if (write_file(fd, header, count, sorted))
        step = "writing";
      else if (fsync(fd))
        step = "syncing";
      int err = errno;
      if (close(fd) && !step) {
        step = "closing";
        err = errno;
      }
      if (!step && rename(temp, path)) {
        step = "renaming";
        err = errno;
      }
      if (step) {
        unlink(temp);
        status = herd_seterr(HERD_EIO, "%s: %s %s: %s", path, step, temp, strerror(err));
      } else if (herd_sync_directory(path)) {
        status = herd_seterr(HERD_EIO, "%s: syncing its directory: %s", path, strerror(errno));
      }
    }
  }
  free(temp);
  free(header);
  json_decref(root);
  free(sorted);
  return status;
}
