// Tests of runtime/safetensors: bit-exact round trips of every dtype, a file from another writer
// (unaligned offsets, padding), one test per malformed header, a seeded fuzzer over header
// mutations (run it under --enable-sanitizers: every read must stay inside the image), and
// atomic saves (missing directory, replacing a file, a write that fails half-way).
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "safetensors.h"

static char test_dir[256];

static void make_test_dir(void) {
  snprintf(test_dir, sizeof test_dir, "%s/herd-safetensors-XXXXXX",
           getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  cr_assert_not_null(mkdtemp(test_dir));
}

static void remove_test_dir(void) {
  char command[400];
  snprintf(command, sizeof command, "rm -rf '%s'", test_dir);
  cr_assert_eq(system(command), 0);
}

TestSuite(safetensors, .init = make_test_dir, .fini = remove_test_dir, .timeout = 300);

// ---------------------------------------------------------------- helpers

static const char *in_test_dir(const char *name) {
  static char path[512];
  snprintf(path, sizeof path, "%s/%s", test_dir, name);
  return path;
}

static uint8_t *read_whole_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f, "%s: %s", path, strerror(errno));
  cr_assert_eq(fseek(f, 0, SEEK_END), 0);
  long n = ftell(f);
  cr_assert_geq(n, 0);
  rewind(f);
  uint8_t *data = malloc(n ? (size_t)n : 1);
  cr_assert_eq(fread(data, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  *size = (size_t)n;
  return data;
}

static void write_whole_file(const char *path, const uint8_t *data, size_t size) {
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f, "%s: %s", path, strerror(errno));
  cr_assert_eq(fwrite(data, 1, size, f), size);
  cr_assert_eq(fclose(f), 0);
}

// Entries of test_dir, "." and ".." aside.
static int count_dir_entries(void) {
  DIR *dir = opendir(test_dir);
  cr_assert_not_null(dir);
  int n = 0;
  struct dirent *d;
  while ((d = readdir(dir)))
    if (strcmp(d->d_name, ".") && strcmp(d->d_name, "..")) n++;
  closedir(dir);
  return n;
}

// Whether `path` is mapped into this process.
static int is_mapped(const char *path) {
  FILE *f = fopen("/proc/self/maps", "r");
  cr_assert_not_null(f);
  char line[4096];
  int found = 0;
  while (fgets(line, sizeof line, f))
    if (strstr(line, path)) found = 1;
  fclose(f);
  return found;
}

// A file image by another writer: the 8-byte size of `header` (as given, padding included),
// `header`, then `data_len` bytes of `data` (zeros when NULL). malloc'd to its exact size, so
// AddressSanitizer catches a read past its end.
static uint8_t *make_image(const char *header, const void *data, size_t data_len, size_t *size) {
  size_t n = strlen(header);
  *size = 8 + n + data_len;
  uint8_t *image = calloc(1, *size);
  cr_assert_not_null(image);
  for (int i = 0; i < 8; i++) image[i] = (uint8_t)((uint64_t)n >> (8 * i));
  memcpy(image + 8, header, n);
  if (data) memcpy(image + 8 + n, data, data_len);
  return image;
}

static herd_tensor *new_tensor(herd_dtype dtype, int ndim, const int64_t *shape, const void *bits) {
  herd_tensor *t = NULL;
  cr_assert_eq(herd_tensor_new(&t, dtype, HERD_CPU, ndim, shape), HERD_OK, "%s", herd_errmsg());
  if (bits && herd_tensor_nbytes(t)) memcpy(herd_tensor_data(t), bits, herd_tensor_nbytes(t));
  return t;
}

static herd_safetensors *open_ok(const char *path) {
  herd_safetensors *file = NULL;
  int status = herd_safetensors_open(&file, path);
  cr_assert_eq(status, HERD_OK, "open %s: %s", path, herd_errmsg());
  cr_assert_not_null(file);
  return file;
}

static herd_tensor *tensor_named(const herd_safetensors *file, const char *name) {
  int index = herd_safetensors_find(file, name);
  cr_assert_geq(index, 0, "no tensor '%s'", name);
  cr_assert_str_eq(herd_safetensors_name(file, index), name);
  herd_tensor *t = NULL;
  cr_assert_eq(herd_safetensors_tensor(file, index, &t), HERD_OK, "%s", herd_errmsg());
  return t;
}

// Same dtype, shape and bytes.
static void assert_same_tensor(const herd_tensor *got, const herd_tensor *want, const char *name) {
  cr_assert_eq(got->dtype, want->dtype, "%s: dtype", name);
  cr_assert_eq(got->ndim, want->ndim, "%s: ndim", name);
  for (int d = 0; d < want->ndim; d++)
    cr_assert_eq(got->shape[d], want->shape[d], "%s: dim %d", name, d);
  cr_assert(herd_tensor_is_contiguous(got), "%s: not contiguous", name);
  size_t n = herd_tensor_nbytes(want);
  cr_assert_eq(herd_tensor_nbytes(got), n, "%s: nbytes", name);
  if (n)
    cr_assert_eq(memcmp(herd_tensor_data(got), herd_tensor_data(want), n), 0, "%s: bits", name);
}

// ---------------------------------------------------------------- round trips

enum { N_ROUND_TRIP = 10 };
static const char *const ROUND_TRIP_NAMES[N_ROUND_TRIP] = {
    "f32.special", "f32.matrix", "bf16",  "f16",    "i32",
    "u8.all",      "scalar",     "empty", "four.d", "z.odd",
};

// One tensor of every dtype with the bit patterns that conversions lose: NaN payloads, signalling
// NaNs, infinities, -0.0, denormals; a scalar, an empty tensor, a 4-D one; "z.odd" (3 bytes)
// sorts last so the others stay aligned in the file.
static void make_round_trip_tensors(herd_tensor **t) {
  static const uint32_t f32_bits[8] = {0x7fc00000, 0x7fc00001, 0xffc12345, 0x7f800001,
                                       0x7f800000, 0xff800000, 0x80000000, 0x00000001};
  static const uint16_t bf16_bits[8] = {0x7fc1, 0xff80, 0x7f80, 0x8000,
                                        0x0001, 0x3f80, 0xbf80, 0x7f81};
  static const uint16_t f16_bits[8] = {0x7c00, 0xfc00, 0x7e01, 0x7c01,
                                       0x8000, 0x0001, 0x3c00, 0x7bff};
  static const int32_t i32_values[6] = {INT32_MIN, INT32_MAX, -1, 0, 1, 123456789};
  uint8_t u8_values[256];
  for (int i = 0; i < 256; i++) u8_values[i] = (uint8_t)(255 - i);
  float matrix[15], four_d[24], scalar = -1.5f;
  for (int i = 0; i < 15; i++) matrix[i] = (float)i * 0.37f - 2.0f;
  for (int i = 0; i < 24; i++) four_d[i] = 1.0f / (float)(i + 1);
  static const uint8_t odd[3] = {7, 0, 255};

  t[0] = new_tensor(HERD_F32, 1, (int64_t[]){8}, f32_bits);
  t[1] = new_tensor(HERD_F32, 2, (int64_t[]){3, 5}, matrix);
  t[2] = new_tensor(HERD_BF16, 2, (int64_t[]){2, 4}, bf16_bits);
  t[3] = new_tensor(HERD_F16, 1, (int64_t[]){8}, f16_bits);
  t[4] = new_tensor(HERD_I32, 2, (int64_t[]){2, 3}, i32_values);
  t[5] = new_tensor(HERD_U8, 1, (int64_t[]){256}, u8_values);
  t[6] = new_tensor(HERD_F32, 0, NULL, &scalar);
  t[7] = new_tensor(HERD_F32, 2, (int64_t[]){0, 3}, NULL);
  t[8] = new_tensor(HERD_F32, 4, (int64_t[]){2, 3, 1, 4}, four_d);
  t[9] = new_tensor(HERD_U8, 1, (int64_t[]){3}, odd);
}

static const char *const META_KEYS[] = {"format", "note"};
static const char *const META_VALUES[] = {"pt",
                                          "\xc3\xbcnic\xc3\xb6"
                                          "de \xe2\x9c\x93"};

static void save_round_trip(const char *path, herd_tensor **t) {
  make_round_trip_tensors(t);
  int status = herd_safetensors_save(path, N_ROUND_TRIP, ROUND_TRIP_NAMES,
                                     (const herd_tensor *const *)t, 2, META_KEYS, META_VALUES);
  cr_assert_eq(status, HERD_OK, "save: %s", herd_errmsg());
}

static void check_round_trip(const herd_safetensors *file, herd_tensor **want) {
  cr_assert_eq(herd_safetensors_count(file), N_ROUND_TRIP);
  for (int i = 1; i < N_ROUND_TRIP; i++)
    cr_assert_lt(strcmp(herd_safetensors_name(file, i - 1), herd_safetensors_name(file, i)), 0,
                 "names are not sorted");
  cr_assert_null(herd_safetensors_name(file, N_ROUND_TRIP));
  cr_assert_null(herd_safetensors_name(file, -1));
  cr_assert_eq(herd_safetensors_find(file, "nope"), -1);
  cr_assert_eq(herd_safetensors_find(file, "__metadata__"), -1);
  for (int i = 0; i < N_ROUND_TRIP; i++) {
    herd_tensor *got = tensor_named(file, ROUND_TRIP_NAMES[i]);
    assert_same_tensor(got, want[i], ROUND_TRIP_NAMES[i]);
    herd_tensor_free(got);
  }
  cr_assert_str_eq(herd_safetensors_metadata(file, "format"), "pt");
  cr_assert_str_eq(herd_safetensors_metadata(file, "note"), META_VALUES[1]);
  cr_assert_null(herd_safetensors_metadata(file, "missing"));
}

Test(safetensors, round_trip_is_bit_exact) {
  const char *path = in_test_dir("model.safetensors");
  herd_tensor *t[N_ROUND_TRIP];
  save_round_trip(path, t);

  herd_safetensors *file = open_ok(path);
  check_round_trip(file, t);
  herd_safetensors_close(file);

  size_t size;
  uint8_t *image = read_whole_file(path, &size);
  file = NULL;
  cr_assert_eq(herd_safetensors_parse(&file, image, size, "image"), HERD_OK, "%s", herd_errmsg());
  check_round_trip(file, t);
  herd_safetensors_close(file);
  free(image);
  for (int i = 0; i < N_ROUND_TRIP; i++) herd_tensor_free(t[i]);
}

// The layout Hugging Face's writer produces: header padded with spaces to a multiple of 8, keys
// sorted, data in key order with no holes.
Test(safetensors, saved_layout_is_padded_and_sorted) {
  const char *path = in_test_dir("model.safetensors");
  herd_tensor *t[N_ROUND_TRIP];
  save_round_trip(path, t);
  size_t size;
  uint8_t *image = read_whole_file(path, &size);
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | image[i];
  cr_assert_eq(n % 8, 0, "header size %" PRIu64 " is not a multiple of 8", n);
  cr_assert_eq(image[8], '{');
  size_t end = 8 + n;
  while (image[end - 1] == ' ') end--;
  cr_assert_eq(image[end - 1], '}');
  cr_assert_lt(8 + n - end, 8, "more padding than needed");

  size_t data_bytes = 0;
  for (int i = 0; i < N_ROUND_TRIP; i++) data_bytes += herd_tensor_nbytes(t[i]);
  cr_assert_eq(size, 8 + n + data_bytes);

  char *header = strndup((const char *)image + 8, n);
  const char *last = header;
  const char *sorted[] = {"\"__metadata__\"", "\"bf16\"",        "\"empty\"",  "\"f16\"",
                          "\"f32.matrix\"",   "\"f32.special\"", "\"four.d\"", "\"i32\"",
                          "\"scalar\"",       "\"u8.all\"",      "\"z.odd\""};
  for (size_t i = 0; i < sizeof sorted / sizeof sorted[0]; i++) {
    const char *at = strstr(header, sorted[i]);
    cr_assert_not_null(at, "%s missing from %s", sorted[i], header);
    cr_assert(i == 0 || at > last, "%s out of order in %s", sorted[i], header);
    last = at;
  }
  cr_assert_not_null(strstr(header,
                            "\"bf16\":{\"data_offsets\":[0,16],\"dtype\":\"BF16\","
                            "\"shape\":[2,4]}"),
                     "%s", header);
  cr_assert_not_null(strstr(header,
                            "\"empty\":{\"data_offsets\":[16,16],\"dtype\":\"F32\","
                            "\"shape\":[0,3]}"),
                     "%s", header);
  cr_assert_not_null(strstr(header,
                            "\"scalar\":{\"data_offsets\":[244,248],\"dtype\":\"F32\","
                            "\"shape\":[]}"),
                     "%s", header);
  free(header);
  free(image);
  for (int i = 0; i < N_ROUND_TRIP; i++) herd_tensor_free(t[i]);
}

Test(safetensors, saves_and_reads_an_empty_file) {
  const char *path = in_test_dir("empty.safetensors");
  cr_assert_eq(herd_safetensors_save(path, 0, NULL, NULL, 0, NULL, NULL), HERD_OK, "%s",
               herd_errmsg());
  herd_safetensors *file = open_ok(path);
  cr_assert_eq(herd_safetensors_count(file), 0);
  cr_assert_null(herd_safetensors_metadata(file, "format"));
  herd_safetensors_close(file);
}

// Aligned tensors of a mapped file view it in place (copy-on-write: writes stay private); the
// mapping outlives close() until the last such tensor is freed.
Test(safetensors, mapped_tensors_view_the_file_and_keep_it_mapped) {
  const char *path = in_test_dir("model.safetensors");
  herd_tensor *t[N_ROUND_TRIP];
  save_round_trip(path, t);
  char real[PATH_MAX];
  cr_assert_not_null(realpath(path, real));

  herd_safetensors *file = open_ok(path);
  cr_assert(is_mapped(real));
  herd_tensor *views[N_ROUND_TRIP];
  for (int i = 0; i < N_ROUND_TRIP; i++) {
    views[i] = tensor_named(file, ROUND_TRIP_NAMES[i]);
    cr_assert_not_null(views[i]->storage->context, "%s was copied, not viewed",
                       ROUND_TRIP_NAMES[i]);
  }
  herd_safetensors_close(file);
  cr_assert(is_mapped(real), "close unmapped the file under live tensors");
  for (int i = 0; i < N_ROUND_TRIP; i++) assert_same_tensor(views[i], t[i], ROUND_TRIP_NAMES[i]);

  // Writing into a view changes neither the file nor faults.
  cr_assert_eq(herd_tensor_fill(views[1], 42.0), HERD_OK);
  cr_assert_eq(((const float *)herd_tensor_data(views[1]))[0], 42.0f);
  herd_safetensors *again = open_ok(path);
  herd_tensor *reread = tensor_named(again, "f32.matrix");
  assert_same_tensor(reread, t[1], "f32.matrix after a write into a view");
  herd_tensor_free(reread);
  herd_safetensors_close(again);

  for (int i = 0; i < N_ROUND_TRIP - 1; i++) herd_tensor_free(views[i]);
  cr_assert(is_mapped(real));
  herd_tensor_free(views[N_ROUND_TRIP - 1]);
  cr_assert_not(is_mapped(real), "the mapping leaked after the last tensor was freed");
  for (int i = 0; i < N_ROUND_TRIP; i++) herd_tensor_free(t[i]);

  // Tensors of an in-memory image are copies: they outlive the caller's buffer.
  size_t size;
  uint8_t *image = read_whole_file(path, &size);
  cr_assert_eq(herd_safetensors_parse(&file, image, size, "image"), HERD_OK);
  herd_tensor *copy = tensor_named(file, "four.d");
  herd_safetensors_close(file);
  memset(image, 0xff, size);
  free(image);
  cr_assert_float_eq(((const float *)herd_tensor_data(copy))[1], 0.5f, 0.0f);
  herd_tensor_free(copy);
}

// ---------------------------------------------------------------- files by other writers

// Written by hand, as another library might: entries out of order, fields in another order,
// whitespace and newlines, a U8 tensor of 3 bytes first so the F32 and BF16 after it sit at
// unaligned addresses, a zero-length I32, and trailing-space padding.
static const char OTHER_WRITER_HEADER[] =
    "{\n  \"b.weight\": {\"shape\": [2, 2], \"dtype\": \"F32\", \"data_offsets\": [3, 19]},\n"
    "  \"a.bytes\": {\"data_offsets\": [0, 3], \"dtype\": \"U8\", \"shape\": [3]},\n"
    "  \"c.half\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[19,23]},\n"
    "  \"d.\\u00e9\":{\"dtype\":\"I32\",\"shape\":[0, 5],\"data_offsets\":[23,23]},\n"
    "  \"__metadata__\": {\"format\": \"pt\", \"source\": \"hand-built\"}\n}";

static uint8_t *other_writer_image(size_t *size) {
  // Pad so that the data buffer starts at a multiple of 8: "b.weight" lands at +3.
  char header[1024];
  size_t n = strlen(OTHER_WRITER_HEADER);
  size_t padded = (n + 1 + 7) / 8 * 8;  // at least one trailing space
  snprintf(header, sizeof header, "%s%*s", OTHER_WRITER_HEADER, (int)(padded - n), "");
  uint8_t data[23] = {1, 2, 3};
  const float weights[4] = {1.0f, -2.5f, 3.25f, -0.0f};
  const uint16_t halves[2] = {0x3f80, 0xc040};  // bf16 1.0, -3.0
  memcpy(data + 3, weights, sizeof weights);
  memcpy(data + 19, halves, sizeof halves);
  uint8_t *image = make_image(header, data, sizeof data, size);
  cr_assert_eq((8 + strlen(header)) % 8, 0);
  return image;
}

static void check_other_writer(const herd_safetensors *file) {
  cr_assert_eq(herd_safetensors_count(file), 4);
  cr_assert_str_eq(herd_safetensors_name(file, 0), "a.bytes");
  cr_assert_str_eq(herd_safetensors_name(file, 3), "d.\xc3\xa9");
  cr_assert_str_eq(herd_safetensors_metadata(file, "source"), "hand-built");

  herd_tensor *a = tensor_named(file, "a.bytes");
  cr_assert_eq(a->dtype, HERD_U8);
  cr_assert_eq(memcmp(herd_tensor_data(a), (uint8_t[]){1, 2, 3}, 3), 0);

  herd_tensor *b = tensor_named(file, "b.weight");
  cr_assert_eq(b->dtype, HERD_F32);
  cr_assert_eq(b->ndim, 2);
  cr_assert_eq((uintptr_t)herd_tensor_data(b) % 4, 0, "unaligned f32 data");
  const float *w = herd_tensor_data(b);
  cr_assert(w[0] == 1.0f && w[1] == -2.5f && w[2] == 3.25f && w[3] == 0.0f);
  cr_assert(signbit(w[3]));
  double value;
  cr_assert_eq(herd_tensor_get(b, (int64_t[]){1, 0}, &value), HERD_OK);
  cr_assert_eq(value, 3.25);

  herd_tensor *c = tensor_named(file, "c.half");
  cr_assert_eq((uintptr_t)herd_tensor_data(c) % 2, 0, "unaligned bf16 data");
  cr_assert_eq(((const uint16_t *)herd_tensor_data(c))[1], 0xc040);

  herd_tensor *d = tensor_named(file, "d.\xc3\xa9");
  cr_assert_eq(d->dtype, HERD_I32);
  cr_assert_eq(herd_tensor_numel(d), 0);
  cr_assert_eq(d->shape[1], 5);
  herd_tensor_free(a);
  herd_tensor_free(b);
  herd_tensor_free(c);
  herd_tensor_free(d);
}

Test(safetensors, reads_a_file_from_another_writer) {
  size_t size;
  uint8_t *image = other_writer_image(&size);
  herd_safetensors *file = NULL;
  cr_assert_eq(herd_safetensors_parse(&file, image, size, "other"), HERD_OK, "%s", herd_errmsg());
  check_other_writer(file);
  herd_safetensors_close(file);

  const char *path = in_test_dir("other.safetensors");
  write_whole_file(path, image, size);
  file = open_ok(path);
  check_other_writer(file);
  herd_safetensors_close(file);
  free(image);
}

// ---------------------------------------------------------------- malformed files

static void expect_parse_error(const uint8_t *image, size_t size, int code, const char *needle) {
  herd_safetensors *file = (herd_safetensors *)1;
  herd_clearerr();
  int status = herd_safetensors_parse(&file, image, size, "case.safetensors");
  const char *message = herd_errmsg();
  cr_assert_eq(status, code, "expected %d, got %d (%s)", code, status, message);
  cr_assert_null(file);
  cr_assert_eq(strncmp(message, "case.safetensors: ", 18), 0, "message lacks the origin: %s",
               message);
  cr_assert_not_null(strstr(message, needle), "message \"%s\" lacks \"%s\"", message, needle);
}

// A header (used as is) followed by `data_len` zero bytes must fail with `needle`.
static void expect_header_error(const char *header, size_t data_len, const char *needle) {
  size_t size;
  uint8_t *image = make_image(header, NULL, data_len, &size);
  expect_parse_error(image, size, HERD_ECORRUPT, needle);
  free(image);
}

// The 8-byte size field set to `header_size`, then `rest`.
static void expect_size_field_error(uint64_t header_size, const char *rest, const char *needle) {
  size_t n = strlen(rest);
  uint8_t *image = malloc(8 + n);
  for (int i = 0; i < 8; i++) image[i] = (uint8_t)(header_size >> (8 * i));
  memcpy(image + 8, rest, n);
  expect_parse_error(image, 8 + n, HERD_ECORRUPT, needle);
  free(image);
}

#define ENTRY(name, dtype, shape, begin, end)                                                 \
  "\"" name "\": {\"dtype\": \"" dtype "\", \"shape\": " shape ", \"data_offsets\": [" #begin \
  ", " #end "]}"

Test(safetensors, rejects_bad_header_sizes) {
  expect_size_field_error(200000000, "{}", "header size 200000000 exceeds the limit");
  expect_size_field_error(UINT64_MAX, "{}", "exceeds the limit");
  expect_size_field_error(100, "{}      ", "header size 100 runs past the end of the file");
  expect_size_field_error(3, "{}", "header size 3 runs past the end of the file (10 bytes");
  expect_size_field_error(1, "{}", "too small");
  expect_size_field_error(0, "", "too small");
  expect_parse_error((const uint8_t *)"\x02\0\0\0\0", 5, HERD_ECORRUPT, "file is 5 bytes");
  expect_parse_error(NULL, 0, HERD_ECORRUPT, "file is empty");
}

Test(safetensors, rejects_empty_short_and_missing_files) {
  const char *path = in_test_dir("empty.safetensors");
  write_whole_file(path, (const uint8_t *)"", 0);
  herd_safetensors *file = NULL;
  cr_assert_eq(herd_safetensors_open(&file, path), HERD_ECORRUPT);
  cr_assert_null(file);
  cr_assert_not_null(strstr(herd_errmsg(), "empty.safetensors: file is empty"), "%s",
                     herd_errmsg());

  write_whole_file(path, (const uint8_t *)"\x10\0\0", 3);
  cr_assert_eq(herd_safetensors_open(&file, path), HERD_ECORRUPT);
  cr_assert_not_null(strstr(herd_errmsg(), "file is 3 bytes, too short"), "%s", herd_errmsg());

  cr_assert_eq(herd_safetensors_open(&file, in_test_dir("missing.safetensors")), HERD_ENOTFOUND);
  cr_assert_not_null(strstr(herd_errmsg(), "missing.safetensors: cannot open"), "%s",
                     herd_errmsg());
  cr_assert_eq(herd_safetensors_open(&file, test_dir), HERD_EIO);
  cr_assert_not_null(strstr(herd_errmsg(), "not a regular file"), "%s", herd_errmsg());
  cr_assert_null(file);
}

Test(safetensors, rejects_truncated_data) {
  expect_header_error("{" ENTRY("w", "F32", "[4]", 0, 16) "}", 10,
                      "tensor 'w': data_offsets [0, 16] run past the data buffer (10 bytes");
  // A truncated file cut inside the header.
  size_t size;
  uint8_t *image = other_writer_image(&size);
  expect_parse_error(image, 60, HERD_ECORRUPT, "runs past the end of the file (60 bytes");
  free(image);
}

Test(safetensors, rejects_invalid_json) {
  expect_header_error("{\"w\": {\"dtype\": \"F32\"", 0, "header is not valid JSON");
  expect_header_error("{\"w\": 1}xx", 0, "header is not valid JSON");
  expect_header_error("[1, 2, 3]", 0, "header is not a JSON object");
  expect_header_error("{\"w\xff\": {}}", 0, "header is not valid JSON");
  expect_header_error("{" ENTRY("w", "F32", "[99999999999999999999]", 0, 4) "}", 4,
                      "too big integer");
}

Test(safetensors, rejects_missing_and_extra_fields) {
  expect_header_error("{\"w\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4,
                      "tensor 'w': missing field 'shape'");
  expect_header_error("{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
                      "tensor 'w': missing field 'dtype'");
  expect_header_error("{\"w\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4,
                      "tensor 'w': missing field 'data_offsets'");
  expect_header_error(
      "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4], \"extra\": 1}}", 4,
      "tensor 'w': unexpected field 'extra'");
}

Test(safetensors, rejects_bad_dtypes) {
  expect_header_error("{" ENTRY("w", "F64", "[1]", 0, 8) "}", 8,
                      "tensor 'w': unsupported dtype F64");
  expect_header_error("{" ENTRY("w", "I64", "[1]", 0, 8) "}", 8, "unsupported dtype I64");
  expect_header_error("{" ENTRY("w", "BOOL", "[1]", 0, 1) "}", 1, "unsupported dtype BOOL");
  expect_header_error("{" ENTRY("w", "float32", "[1]", 0, 4) "}", 4,
                      "tensor 'w': unknown dtype 'float32'");
  expect_header_error("{\"w\": {\"dtype\": 4, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
                      "tensor 'w': dtype is not a string");
}

Test(safetensors, rejects_bad_shapes) {
  expect_header_error("{" ENTRY("w", "F32", "[-1]", 0, 4) "}", 4,
                      "tensor 'w': shape holds -1, a negative number");
  expect_header_error("{" ENTRY("w", "F32", "[1.0]", 0, 4) "}", 4,
                      "tensor 'w': shape holds a fraction, not an integer");
  expect_header_error("{" ENTRY("w", "F32", "[\"1\"]", 0, 4) "}", 4,
                      "shape holds a string, not an integer");
  expect_header_error("{" ENTRY("w", "F32", "1", 0, 4) "}", 4, "tensor 'w': shape is not an array");
  expect_header_error("{" ENTRY("w", "F32", "[1, 1, 1, 1, 1]", 0, 4) "}", 4,
                      "shape has 5 dims; herd supports 4");
  expect_header_error("{" ENTRY("w", "F32", "[4294967296, 4294967296, 4294967296]", 0, 4) "}", 4,
                      "shape [4294967296, 4294967296, 4294967296] is too large");
  // A zero dim does not excuse an overflowing product (the strides would overflow).
  expect_header_error("{" ENTRY("w", "F32", "[0, 4294967296, 4294967296]", 0, 0) "}", 0,
                      "is too large");
}

Test(safetensors, rejects_bad_offsets) {
  expect_header_error("{" ENTRY("w", "F32", "[4]", 0, 16) "}", 8,
                      "tensor 'w': data_offsets [0, 16] run past the data buffer");
  expect_header_error("{" ENTRY("w", "F32", "[1]", -4, 0) "}", 4,
                      "tensor 'w': data_offsets holds -4, a negative number");
  expect_header_error("{" ENTRY("w", "F32", "[1]", 8, 4) "}", 8,
                      "tensor 'w': data_offsets [8, 4] end before begin");
  expect_header_error("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4, 8]}}",
                      8, "tensor 'w': data_offsets is not [begin, end]");
  expect_header_error("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0.0, 4]}}",
                      4, "data_offsets holds a fraction");
}

Test(safetensors, rejects_size_mismatch) {
  expect_header_error("{" ENTRY("lm_head.weight", "F32", "[5, 6]", 0, 100) "}", 100,
                      "case.safetensors: tensor 'lm_head.weight': data_offsets [0, 100] do not "
                      "match dtype F32 and shape [5, 6] (120 bytes)");
  expect_header_error("{" ENTRY("s", "BF16", "[]", 0, 4) "}", 4,
                      "tensor 's': data_offsets [0, 4] do not match dtype BF16 and shape [] (2 "
                      "bytes)");
}

Test(safetensors, rejects_overlaps_holes_and_trailing_bytes) {
  expect_header_error("{" ENTRY("a", "F32", "[2]", 0, 8) ", " ENTRY("b", "F32", "[2]", 4, 12) "}",
                      12, "tensors 'a' [0, 8] and 'b' [4, 12] overlap");
  expect_header_error("{" ENTRY("a", "F32", "[2]", 0, 8) ", " ENTRY("b", "F32", "[2]", 0, 8) "}", 8,
                      "overlap");
  expect_header_error("{" ENTRY("a", "F32", "[1]", 0, 4) ", " ENTRY("b", "F32", "[1]", 8, 12) "}",
                      12, "data bytes [4, 8) belong to no tensor (a hole before tensor 'b')");
  expect_header_error("{" ENTRY("a", "F32", "[1]", 0, 4) "}", 8,
                      "the data buffer holds 8 bytes but the tensors cover 4 (trailing bytes)");
  expect_header_error("{}", 1, "the data buffer holds 1 bytes but the tensors cover 0");

  // Zero-length ranges overlap nothing, wherever they sit in the buffer.
  size_t size;
  uint8_t *image =
      make_image("{" ENTRY("a", "F32", "[2]", 0, 8) ", " ENTRY("e", "F32", "[0]", 4, 4) ", " ENTRY(
                     "f", "U8", "[0, 7]", 8, 8) "}",
                 NULL, 8, &size);
  herd_safetensors *file = NULL;
  cr_assert_eq(herd_safetensors_parse(&file, image, size, "zero"), HERD_OK, "%s", herd_errmsg());
  cr_assert_eq(herd_safetensors_count(file), 3);
  herd_safetensors_close(file);
  free(image);
}

Test(safetensors, rejects_duplicate_and_empty_names) {
  expect_header_error("{" ENTRY("w", "F32", "[1]", 0, 4) ", " ENTRY("w", "F32", "[1]", 4, 8) "}", 8,
                      "header: a name appears twice");
  expect_header_error("{" ENTRY("", "F32", "[1]", 0, 4) "}", 4, "a tensor has an empty name");
  expect_header_error("{\"__metadata__\": {}, \"__metadata__\": {}}", 0, "duplicate");
}

Test(safetensors, rejects_non_object_entries_and_bad_metadata) {
  expect_header_error("{\"w\": [0, 4]}", 4, "tensor 'w': entry is not an object");
  expect_header_error("{\"w\": \"F32\"}", 4, "tensor 'w': entry is not an object");
  expect_header_error("{\"__metadata__\": {\"format\": 1}}", 0,
                      "__metadata__ 'format' is not a string");
  expect_header_error("{\"__metadata__\": {\"format\": null}}", 0, "is not a string");
  expect_header_error("{\"__metadata__\": [\"pt\"]}", 0, "__metadata__ is not an object");
}

// ---------------------------------------------------------------- fuzzing

// splitmix64: a seeded stream, so that a failing mutation can be replayed.
static uint64_t fuzz_state;
static uint64_t next_random(void) {
  uint64_t z = (fuzz_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static size_t random_below(size_t n) {
  return n ? (size_t)(next_random() % n) : 0;
}

typedef struct image {
  uint8_t *bytes;
  size_t size, capacity;
} image;

static uint64_t header_size_of(const image *im) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | im->bytes[i];
  return n;
}

static void set_header_size(image *im, uint64_t n) {
  for (int i = 0; i < 8; i++) im->bytes[i] = (uint8_t)(n >> (8 * i));
}

// A position inside the header as the size field says, clamped to the image.
static size_t random_header_position(const image *im) {
  uint64_t n = header_size_of(im);
  size_t limit = im->size - 8 < n ? im->size - 8 : (size_t)n;
  return 8 + random_below(limit ? limit : 1);
}

static void insert_byte(image *im, size_t at, uint8_t byte) {
  memmove(im->bytes + at + 1, im->bytes + at, im->size - at);
  im->bytes[at] = byte;
  im->size++;
}

static void delete_byte(image *im, size_t at) {
  if (at >= im->size) return;
  memmove(im->bytes + at, im->bytes + at + 1, im->size - at - 1);
  im->size--;
}

static const char FUZZ_BYTES[] = "0123456789-.eE,:[]{}\" \\uF";

// One random mutation of the header (or its size field, or the file's length).
static void mutate(image *im) {
  if (im->size < 9) return;
  size_t at = random_header_position(im);
  int keep_size = (int)random_below(2);  // whether insertions/deletions fix the size field
  switch (random_below(8)) {
    case 0:  // flip a bit
      im->bytes[at] ^= (uint8_t)(1u << random_below(8));
      break;
    case 1:  // insert a byte: a JSON-ish one or any
      insert_byte(im, at,
                  random_below(2) ? (uint8_t)FUZZ_BYTES[random_below(sizeof FUZZ_BYTES - 1)]
                                  : (uint8_t)next_random());
      if (keep_size) set_header_size(im, header_size_of(im) + 1);
      break;
    case 2:  // delete a byte
      delete_byte(im, at);
      if (keep_size) set_header_size(im, header_size_of(im) - 1);
      break;
    case 3:
    case 4: {  // change a digit of an offset or a dim: another digit, a sign, a point, more digits
      size_t digits[4096], n = 0;
      uint64_t limit = header_size_of(im) + 8 < im->size ? header_size_of(im) + 8 : im->size;
      for (size_t i = 8; i < limit && n < 4096; i++)
        if (im->bytes[i] >= '0' && im->bytes[i] <= '9') digits[n++] = i;
      if (!n) break;
      size_t d = digits[random_below(n)];
      size_t how = random_below(6);
      if (how < 3) {
        im->bytes[d] = (uint8_t)('0' + random_below(10));
      } else if (how == 3) {
        im->bytes[d] = random_below(2) ? '-' : '.';
      } else {
        insert_byte(im, d, (uint8_t)('0' + random_below(10)));
        if (keep_size) set_header_size(im, header_size_of(im) + 1);
      }
      break;
    }
    case 5:  // truncate the file
      im->size = random_below(im->size + 1);
      break;
    case 6: {  // change the header size field
      uint64_t n = header_size_of(im);
      const uint64_t choices[] = {0,
                                  1,
                                  2,
                                  n - 1,
                                  n + 1,
                                  n + 8,
                                  im->size - 8,
                                  im->size - 7,
                                  next_random(),
                                  random_below(256),
                                  UINT64_MAX,
                                  1ull << 63};
      set_header_size(im, choices[random_below(sizeof choices / sizeof choices[0])]);
      break;
    }
    default:  // change a name or a value: a letter for another letter
      if (im->bytes[at] >= 'a' && im->bytes[at] <= 'z')
        im->bytes[at] = (uint8_t)('a' + random_below(26));
      else if (im->bytes[at] >= 'A' && im->bytes[at] <= 'Z')
        im->bytes[at] = (uint8_t)('A' + random_below(26));
      break;
  }
}

// Reads every byte of every tensor of an accepted image; the tensors must tile the data buffer.
static void check_accepted(const herd_safetensors *file, size_t size, uint64_t header_size) {
  uint64_t total = 0;
  for (int i = 0; i < herd_safetensors_count(file); i++) {
    herd_tensor *t = NULL;
    cr_assert_eq(herd_safetensors_tensor(file, i, &t), HERD_OK, "%s", herd_errmsg());
    const uint8_t *p = herd_tensor_data(t);
    size_t n = herd_tensor_nbytes(t);
    volatile uint8_t sum = 0;
    for (size_t k = 0; k < n; k++) sum += p[k];
    total += n;
    herd_tensor_free(t);
  }
  cr_assert_eq(total, size - 8 - header_size, "accepted tensors do not tile the data buffer");
}

Test(safetensors, fuzzed_headers_never_crash) {
  const char *seed_env = getenv("HERD_FUZZ_SEED");
  const char *count_env = getenv("HERD_FUZZ_COUNT");
  uint64_t seed = seed_env ? strtoull(seed_env, NULL, 0) : 20240611;
  int count = count_env ? atoi(count_env) : 4000;

  // Two valid images: one of ours, one by the "other writer" (unaligned, padded).
  const char *path = in_test_dir("model.safetensors");
  herd_tensor *t[N_ROUND_TRIP];
  save_round_trip(path, t);
  for (int i = 0; i < N_ROUND_TRIP; i++) herd_tensor_free(t[i]);
  size_t sizes[2];
  uint8_t *bases[2];
  bases[0] = read_whole_file(path, &sizes[0]);
  bases[1] = other_writer_image(&sizes[1]);

  int accepted = 0, rejected = 0, by_code[9] = {0};
  for (int iter = 0; iter < count; iter++) {
    fuzz_state = seed * 1000003u + (uint64_t)iter;
    int which = (int)random_below(2);
    image im = {.size = sizes[which], .capacity = sizes[which] + 64};
    im.bytes = malloc(im.capacity);
    memcpy(im.bytes, bases[which], im.size);
    int n_mutations = 1 + (int)random_below(3);
    for (int m = 0; m < n_mutations && im.size < im.capacity; m++) mutate(&im);

    // An exact-size copy, so that AddressSanitizer sees any read past the end.
    uint8_t *exact = malloc(im.size ? im.size : 1);
    memcpy(exact, im.bytes, im.size);
    herd_safetensors *file = NULL;
    herd_clearerr();
    int status = herd_safetensors_parse(&file, im.size ? exact : NULL, im.size, "fuzz");
    if (status == HERD_OK) {
      accepted++;
      check_accepted(file, im.size, header_size_of(&im));
      herd_safetensors_close(file);
    } else {
      rejected++;
      cr_assert_lt(status, 0);
      cr_assert_geq(status, -8);
      by_code[-status]++;
      cr_assert_null(file);
      cr_assert_neq(herd_errmsg()[0], '\0', "seed %" PRIu64 " iteration %d: empty message", seed,
                    iter);
      cr_assert_eq(strncmp(herd_errmsg(), "fuzz: ", 6), 0, "iteration %d: %s", iter, herd_errmsg());
    }
    // Every 16th mutant also goes through a file and the mapped path.
    if (iter % 16 == 0) {
      const char *fuzz_path = in_test_dir("fuzz.safetensors");
      write_whole_file(fuzz_path, exact, im.size);
      int open_status = herd_safetensors_open(&file, fuzz_path);
      cr_assert_eq(open_status, status, "iteration %d: open %d vs parse %d (%s)", iter, open_status,
                   status, herd_errmsg());
      if (open_status == HERD_OK) {
        check_accepted(file, im.size, header_size_of(&im));
        herd_safetensors_close(file);
      }
    }
    free(exact);
    free(im.bytes);
  }
  free(bases[0]);
  free(bases[1]);
  fprintf(stderr,
          "# fuzz: seed %" PRIu64
          ", %d mutants: %d accepted, %d rejected (%d ECORRUPT, "
          "%d other)\n",
          seed, count, accepted, rejected, by_code[-HERD_ECORRUPT],
          rejected - by_code[-HERD_ECORRUPT]);
  cr_assert_eq(accepted + rejected, count);
  // Both paths must be exercised for the test to mean anything.
  cr_assert_geq(accepted, count / 100, "only %d of %d mutants accepted", accepted, count);
  cr_assert_geq(rejected, count / 2, "only %d of %d mutants rejected", rejected, count);
  cr_assert_eq(rejected, by_code[-HERD_ECORRUPT], "a malformed header gave another error code");
}

// ---------------------------------------------------------------- saving

Test(safetensors, save_into_a_missing_directory_fails_cleanly) {
  herd_tensor *t = new_tensor(HERD_F32, 1, (int64_t[]){4}, NULL);
  const char *path = in_test_dir("no/such/dir/model.safetensors");
  int status = herd_safetensors_save(path, 1, (const char *[]){"w"},
                                     (const herd_tensor *const[]){t}, 0, NULL, NULL);
  cr_assert_eq(status, HERD_EIO);
  cr_assert_not_null(strstr(herd_errmsg(), "model.safetensors: cannot create"), "%s",
                     herd_errmsg());
  cr_assert_not_null(strstr(herd_errmsg(), "No such file or directory"), "%s", herd_errmsg());
  cr_assert_eq(count_dir_entries(), 0);
  herd_tensor_free(t);
}

Test(safetensors, save_replaces_an_existing_file_atomically) {
  const char *path = in_test_dir("model.safetensors");
  float first[4] = {1, 2, 3, 4}, second[6] = {-1, -2, -3, -4, -5, -6};
  herd_tensor *a = new_tensor(HERD_F32, 1, (int64_t[]){4}, first);
  herd_tensor *b = new_tensor(HERD_F32, 2, (int64_t[]){2, 3}, second);
  cr_assert_eq(herd_safetensors_save(path, 1, (const char *[]){"w"},
                                     (const herd_tensor *const[]){a}, 0, NULL, NULL),
               HERD_OK, "%s", herd_errmsg());
  herd_safetensors *old = open_ok(path);
  herd_tensor *old_view = tensor_named(old, "w");

  cr_assert_eq(
      herd_safetensors_save(path, 2, (const char *[]){"w", "v"}, (const herd_tensor *const[]){b, a},
                            1, (const char *[]){"step"}, (const char *[]){"2"}),
      HERD_OK, "%s", herd_errmsg());
  cr_assert_eq(count_dir_entries(), 1, "a temporary file was left behind");
  herd_safetensors *now = open_ok(path);
  cr_assert_eq(herd_safetensors_count(now), 2);
  cr_assert_str_eq(herd_safetensors_metadata(now, "step"), "2");
  herd_tensor *w = tensor_named(now, "w");
  assert_same_tensor(w, b, "new w");
  herd_tensor *v = tensor_named(now, "v");
  assert_same_tensor(v, a, "new v");
  // The old file was replaced by a rename, not rewritten: its mapping still reads the old bytes.
  assert_same_tensor(old_view, a, "old w");

  herd_tensor_free(old_view);
  herd_tensor_free(w);
  herd_tensor_free(v);
  herd_safetensors_close(old);
  herd_safetensors_close(now);
  herd_tensor_free(a);
  herd_tensor_free(b);
}

// A write that fails half-way (the file-size limit stands in for a full disk: write() fails with
// EFBIG where a full disk gives ENOSPC, through the same path) leaves the old file untouched and
// no temporary file behind.
Test(safetensors, failed_write_keeps_the_old_file) {
  const char *path = in_test_dir("model.safetensors");
  float small[4] = {1, 2, 3, 4};
  herd_tensor *a = new_tensor(HERD_F32, 1, (int64_t[]){4}, small);
  cr_assert_eq(herd_safetensors_save(path, 1, (const char *[]){"w"},
                                     (const herd_tensor *const[]){a}, 0, NULL, NULL),
               HERD_OK, "%s", herd_errmsg());
  size_t old_size;
  uint8_t *old_bytes = read_whole_file(path, &old_size);

  herd_tensor *big = new_tensor(HERD_F32, 2, (int64_t[]){512, 512}, NULL);
  cr_assert_eq(herd_tensor_fill(big, 0.5), HERD_OK);
  signal(SIGXFSZ, SIG_IGN);
  struct rlimit limit = {.rlim_cur = 65536, .rlim_max = RLIM_INFINITY};
  cr_assert_eq(setrlimit(RLIMIT_FSIZE, &limit), 0);
  int status = herd_safetensors_save(path, 1, (const char *[]){"w"},
                                     (const herd_tensor *const[]){big}, 0, NULL, NULL);
  limit.rlim_cur = RLIM_INFINITY;
  cr_assert_eq(setrlimit(RLIMIT_FSIZE, &limit), 0);
  cr_assert_eq(status, HERD_EIO);
  cr_assert_not_null(strstr(herd_errmsg(), "model.safetensors: writing"), "%s", herd_errmsg());
  cr_assert_not_null(strstr(herd_errmsg(), strerror(EFBIG)), "%s", herd_errmsg());
  cr_assert_eq(count_dir_entries(), 1, "a temporary file was left behind");
  size_t now_size;
  uint8_t *now_bytes = read_whole_file(path, &now_size);
  cr_assert_eq(now_size, old_size);
  cr_assert_eq(memcmp(now_bytes, old_bytes, old_size), 0, "the old file was modified");
  free(old_bytes);
  free(now_bytes);
  herd_tensor_free(a);
  herd_tensor_free(big);
}

Test(safetensors, save_rejects_bad_arguments) {
  const char *path = in_test_dir("model.safetensors");
  herd_tensor *a = new_tensor(HERD_F32, 2, (int64_t[]){2, 3}, NULL);
  herd_tensor *transposed = NULL;
  cr_assert_eq(herd_tensor_transpose(&transposed, a, 0, 1), HERD_OK);
  const herd_tensor *const two[] = {a, a};

  cr_assert_eq(herd_safetensors_save(path, 2, (const char *[]){"w", "w"}, two, 0, NULL, NULL),
               HERD_EINVAL);
  cr_assert_not_null(strstr(herd_errmsg(), "tensor name 'w' given twice"), "%s", herd_errmsg());
  cr_assert_eq(herd_safetensors_save(path, 1, (const char *[]){""}, two, 0, NULL, NULL),
               HERD_EINVAL);
  cr_assert_not_null(strstr(herd_errmsg(), "has no name"), "%s", herd_errmsg());
  cr_assert_eq(herd_safetensors_save(path, 1, (const char *[]){"__metadata__"}, two, 0, NULL, NULL),
               HERD_EINVAL);
  cr_assert_not_null(strstr(herd_errmsg(), "reserved"), "%s", herd_errmsg());
  cr_assert_eq(herd_safetensors_save(path, 1, (const char *[]){"t"},
                                     (const herd_tensor *const[]){transposed}, 0, NULL, NULL),
               HERD_EINVAL);
  cr_assert_not_null(strstr(herd_errmsg(), "tensor 't' is not contiguous"), "%s", herd_errmsg());
  cr_assert_eq(herd_safetensors_save(path, 1, (const char *[]){"w\xff"}, two, 0, NULL, NULL),
               HERD_EINVAL);
  cr_assert_not_null(strstr(herd_errmsg(), "not UTF-8"), "%s", herd_errmsg());
  cr_assert_eq(herd_safetensors_save(path, 1, (const char *[]){"w"}, two, 2,
                                     (const char *[]){"k", "k"}, (const char *[]){"1", "2"}),
               HERD_EINVAL);
  cr_assert_not_null(strstr(herd_errmsg(), "metadata key 'k' given twice"), "%s", herd_errmsg());
  cr_assert_eq(count_dir_entries(), 0, "a failed save left a file");
  herd_tensor_free(transposed);
  herd_tensor_free(a);
}
