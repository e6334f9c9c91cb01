// defines: herd_dataset, herd_dataset_load_jsonl, herd_dataset_from_lines, herd_dataset_free,
//          herd_dataset_size, herd_dataset_record, herd_dataset_origin, herd_dataset_bytes,
//          herd_dataset_validate, herd_dataset_select, herd_dataset_filter_eq,
//          herd_dataset_shuffle, herd_dataset_sample, herd_dataset_split, herd_dataset_concat,
//          herd_dataset_write_jsonl, herd_dataset_stats, herd_dataset_describe,
//          herd_dataset_stats_free, HERD_SCHEMA_*, herd_pack_sample, herd_pack_options,
//          herd_pack_stats, herd_packed, herd_pack, herd_packed_free, HERD_PACK_*
//
// JSONL records in compact storage (doc/data.md): one text arena holding every record's JSON
// line as read (so writing it back is byte-identical), per-record offsets and source line numbers,
// and typed columns for herd's preference fields (interned source/rating/domain/safety_bin, batch,
// character lengths of prompt/chosen/rejected, dialog turns). A dataset is a view: an index array
// over a refcounted storage, so filter/shuffle/sample/split cost 4 bytes per record and share the
// text. Records are 0-based here; the Lua binding is 1-based.
#ifndef HERD_DATASET_H
#define HERD_DATASET_H

#include <stddef.h>
#include <stdint.h>

typedef struct herd_dataset herd_dataset;

enum {
  HERD_SCHEMA_NONE = 0,        // any JSON object per line
  HERD_SCHEMA_PREFERENCE = 1,  // herd's preference pairs (doc/data.md)
};

// Reads a JSONL file: one JSON object per line, empty (or blank) lines skipped. A missing file is
// HERD_ENOTFOUND; a line that is not JSON or not an object is HERD_ECORRUPT naming "path:line"
// (a last line without a newline that does not parse is called truncated); a record that breaks
// `schema` is HERD_EINVAL "path:line: field 'name': ...".
int herd_dataset_load_jsonl(herd_dataset **out, const char *path, int schema);
// The same from `n` lines in memory (lens[i] bytes each, or strlen when lens is NULL); `origin`
// names them in messages and records; line numbers are 1..n.
int herd_dataset_from_lines(herd_dataset **out, const char *const *lines, const size_t *lens,
                            size_t n, const char *origin, int schema);
void herd_dataset_free(herd_dataset *ds);

size_t herd_dataset_size(const herd_dataset *ds);
// Record i's JSON text (NUL-terminated, valid while any dataset over the storage lives).
int herd_dataset_record(const herd_dataset *ds, size_t i, const char **text, size_t *len);
// Where record i came from: the file (or origin) and its 1-based line.
int herd_dataset_origin(const herd_dataset *ds, size_t i, const char **file, int64_t *line);
// Bytes of memory held: the whole shared storage plus this view's index.
size_t herd_dataset_bytes(const herd_dataset *ds);
// Checks every record against `schema`; the first failure as in herd_dataset_load_jsonl.
int herd_dataset_validate(const herd_dataset *ds, int schema);

// Views sharing the storage; each *out is a new dataset the caller frees.
// The records at positions idx[0..n) (repeats allowed); HERD_EINVAL on a position out of range.
int herd_dataset_select(herd_dataset **out, const herd_dataset *ds, const size_t *idx, size_t n);
// Records whose top-level field fields[k] equals the JSON value json_values[k] for every k
// (numbers compare by value, 3 == 3.0; a missing field never matches).
int herd_dataset_filter_eq(herd_dataset **out, const herd_dataset *ds, const char *const *fields,
                           const char *const *json_values, size_t n_conditions);
// A permutation drawn with Philox from `seed` alone: the same on every machine.
int herd_dataset_shuffle(herd_dataset **out, const herd_dataset *ds, uint64_t seed);
// n records without replacement: the first n of herd_dataset_shuffle(seed).
int herd_dataset_sample(herd_dataset **out, const herd_dataset *ds, size_t n, uint64_t seed);
// round(fraction * size) records into *first, the rest into *second; shuffled with `seed` first
// when `shuffle` is non-zero, else cut in order.
int herd_dataset_split(herd_dataset **first, herd_dataset **second, const herd_dataset *ds,
                       double fraction, uint64_t seed, int shuffle);
// a's records then b's (a new storage unless both are views of the same one).
int herd_dataset_concat(herd_dataset **out, const herd_dataset *a, const herd_dataset *b);

// Writes the records as JSONL (each record's text as stored, one per line) to a temporary file
// beside `path`, fsyncs it and renames it over `path`.
int herd_dataset_write_jsonl(const herd_dataset *ds, const char *path);

typedef struct herd_dataset_count {
  const char *value;  // borrowed from the dataset's storage
  size_t count;
} herd_dataset_count;

typedef struct herd_dataset_batch_count {
  int64_t batch;
  size_t count;
} herd_dataset_batch_count;

typedef struct herd_dataset_lengths {
  size_t n;  // records that have the field
  int64_t min, max, median, total;
  double mean;
} herd_dataset_lengths;

enum { HERD_DS_SOURCE, HERD_DS_RATING, HERD_DS_DOMAIN, HERD_DS_SAFETY_BIN, HERD_DS_NCATEGORIES };

typedef struct herd_dataset_stats {
  size_t n;
  // Counts of the string values of source, rating, domain, safety_bin (by value, ascending).
  herd_dataset_count *counts[HERD_DS_NCATEGORIES];
  size_t n_counts[HERD_DS_NCATEGORIES];
  herd_dataset_batch_count *batches;  // integer batches, ascending
  size_t n_batches;
  // Lengths in characters (UTF-8 code points); a dialog's prompt is all its messages' content.
  herd_dataset_lengths prompt, chosen, rejected;
  size_t n_dialogs;   // records with `dialog` rather than `prompt`
  double mean_turns;  // user turns per record with a prompt or dialog (a `prompt` is one turn)
} herd_dataset_stats;

// Fills *stats (value strings borrowed from ds); herd_dataset_stats_free releases the arrays.
int herd_dataset_describe(const herd_dataset *ds, herd_dataset_stats *stats);
void herd_dataset_stats_free(herd_dataset_stats *stats);

// ---------------------------------------------------------------- packing for SFT

// Packing (Llama 2 section 3.1): tokenized samples concatenated into rows of `seq` tokens, with
// segment ids so packed samples never attend to each other, positions restarting per sample,
// and a loss weight per target so only answer tokens are trained. See doc/data.md.
typedef struct herd_pack_sample {
  const int32_t *ids;  // (len) token ids >= 0
  const float *mask;   // (len) 1 where token t is an answer token whose prediction is trained
  int len;
} herd_pack_sample;

enum {
  HERD_PACK_TRUNCATE = 0,  // an over-long sample keeps its first `seq` tokens
  HERD_PACK_ERROR = 1,     // an over-long sample is an error naming it
};

typedef struct herd_pack_options {
  int seq;         // T, tokens per row (>= 2)
  int32_t pad;     // padding token id (>= 0), e.g. eos
  int overlong;    // HERD_PACK_TRUNCATE or HERD_PACK_ERROR
  int index_base;  // the number messages give samples[0]: 0 from C, 1 from Lua
} herd_pack_options;

typedef struct herd_pack_stats {
  size_t samples;    // samples placed in rows
  size_t truncated;  // over-long samples cut to seq tokens (including the skipped ones)
  size_t skipped;    // truncated samples left with no trained token, not placed
  size_t rows;
  size_t tokens;   // sample tokens placed (not padding)
  size_t trained;  // targets with weight 1
  size_t padding;  // rows * seq - tokens
} herd_pack_stats;

// Rows of (rows, seq) row-major arrays; placement per input sample (row -1 when skipped).
typedef struct herd_packed {
  int rows, seq;
  int32_t *tokens;     // input ids; padding = pad
  int32_t *targets;    // next token of the same sample, -1 at a sample's last token and padding
  float *weights;      // mask of the target token (0 or 1); 0 on padding
  int32_t *segments;   // 0, 1, ... per sample in the row; padding gets the next id
  int32_t *positions;  // 0.. restarting per sample (and for the padding run)
  size_t n_samples;
  int32_t *sample_row, *sample_start, *sample_len;  // (n_samples) where each sample went
  herd_pack_stats stats;
} herd_packed;

// Greedy in input order: a sample goes into the current row when it fits, else it starts a new
// row (no reordering, so the same samples always give the same rows). Errors name the sample:
// a length mismatch is the caller's to check; here an id < 0, a mask value other than 0 or 1,
// a sample with no trained token (mask[1..len) all 0, before truncation), an over-long sample
// with HERD_PACK_ERROR, and options out of range. On error *out is left empty.
int herd_pack(herd_packed *out, const herd_pack_sample *samples, size_t n,
              const herd_pack_options *options);
void herd_packed_free(herd_packed *packed);

#endif
