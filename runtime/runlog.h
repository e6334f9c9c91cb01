// defines: herd_runlog, herd_run, herd_run_info, herd_run_status,
//          herd_runlog_open, herd_runlog_close, herd_runlog_path, herd_runlog_sqlite,
//          herd_runlog_gc, herd_runlog_schema_version, herd_runlog_set_heartbeat,
//          herd_run_start, herd_run_id, herd_run_uuid, herd_run_is_open,
//          herd_run_set_name, herd_run_set_parent, herd_run_set_seed, herd_run_set_script,
//          herd_run_set_config, herd_run_add_tag, herd_run_param, herd_run_log, herd_run_flush,
//          herd_run_pending, herd_run_artifact, herd_run_finish, herd_run_free
//
// The run history: one SQLite database (schema in doc/runs.md) that every experiment writes its
// runs, params, metrics and artifacts into. Several processes may write one database at once
// (WAL, busy timeout, BEGIN IMMEDIATE). Metrics are buffered and written in batches. A run whose
// process died is found by pid (same host) or by a stale heartbeat and marked 'crashed'.
#ifndef HERD_RUNLOG_H
#define HERD_RUNLOG_H

#include <stdint.h>

typedef struct herd_runlog herd_runlog;  // one connection to a history database
typedef struct herd_run herd_run;        // one run being recorded through a herd_runlog

#define HERD_RUNLOG_SCHEMA_VERSION 1

enum herd_runlog_flags {
  HERD_RUNLOG_CREATE = 1,  // create the database file when it does not exist
};

typedef enum herd_run_status {
  HERD_RUN_RUNNING,
  HERD_RUN_FINISHED,
  HERD_RUN_FAILED,
  HERD_RUN_KILLED,
  HERD_RUN_CRASHED,
} herd_run_status;

// What is known about a run when it starts. NULL strings are stored as NULL.
typedef struct herd_run_info {
  const char *name;           // required, non-empty
  const char *script;         // path of the script that made the run
  const char *script_sha256;  // hex digest of that script
  const char *args_json;      // the script's arguments as a JSON array
  const char *git_rev;        // commit of the working directory's repository
  int git_dirty;              // 1 dirty, 0 clean, -1 unknown / no repository
  int64_t parent_id;          // 0 for none
  int has_seed;
  int64_t seed;
  const char *config_json;  // a JSON object, flattened into params; NULL for none
} herd_run_info;

// Opens (and with HERD_RUNLOG_CREATE creates) the database at `path`, migrating its schema.
// A file that is not a SQLite database, or whose schema is newer than this herd, is refused
// without being modified.
int herd_runlog_open(herd_runlog **out, const char *path, int flags);
// Runs still open are finished as failed and detached (their handles must still be freed).
void herd_runlog_close(herd_runlog *db);
const char *herd_runlog_path(const herd_runlog *db);
// The underlying connection, for read queries (`herd runs`); do not write through it.
struct sqlite3 *herd_runlog_sqlite(herd_runlog *db);
int herd_runlog_schema_version(herd_runlog *db, int *version);
// Seconds between heartbeats of this connection's open runs (default 15). 0 stops the
// background thread's work: no heartbeats and no flushes of waiting points.
int herd_runlog_set_heartbeat(herd_runlog *db, double seconds);
// Marks runs whose process is gone as 'crashed'; `marked` receives how many (may be NULL).
int herd_runlog_gc(herd_runlog *db, int *marked);

int herd_run_start(herd_runlog *db, const herd_run_info *info, herd_run **out);
int64_t herd_run_id(const herd_run *run);
const char *herd_run_uuid(const herd_run *run);
int herd_run_is_open(const herd_run *run);

int herd_run_set_name(herd_run *run, const char *name);
int herd_run_set_parent(herd_run *run, int64_t parent_id);
int herd_run_set_seed(herd_run *run, int64_t seed);
// Replaces the recorded script (a recipe that reruns another script records that script).
int herd_run_set_script(herd_run *run, const char *path, const char *sha256, const char *args_json);
// Stores `json` (an object, kept as written) as the run's config and its flattened leaves as
// params
// ('ppo.beta' = 0.01; array items as 'layers.1', 'layers.2', ...).
int herd_run_set_config(herd_run *run, const char *json);
int herd_run_add_tag(herd_run *run, const char *tag);
// One param; `json_value` is any JSON value (objects and arrays are flattened under `key`).
int herd_run_param(herd_run *run, const char *key, const char *json_value);

// Buffers one metric point; points reach the database in batches: when the buffer fills, when
// the oldest waits a second (written by the logging call or, when none comes, by the background
// thread), on herd_run_flush and on finish. NaN is kept distinct from NULL.
int herd_run_log(herd_run *run, const char *key, int64_t step, double value);
int herd_run_flush(herd_run *run);
int herd_run_pending(herd_run *run);  // points buffered, not yet written

// Records a file produced by the run with its sha256 and size.
int herd_run_artifact(herd_run *run, const char *name, const char *path, const char *kind);

// Flushes metrics and closes the run with FINISHED, FAILED or KILLED (error may be NULL).
int herd_run_finish(herd_run *run, herd_run_status status, const char *error);
// Frees the handle. A run still open is first finished as FAILED ("run handle freed while open").
void herd_run_free(herd_run *run);

const char *herd_run_status_name(herd_run_status status);

#endif
