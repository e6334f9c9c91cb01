// The run history in SQLite. See runlog.h for the contract and doc/runs.md for the schema.
#include "runlog.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "runlog_schema.h"
#include "sha256.h"

enum {
  BUSY_TIMEOUT_MS = 30000,  // a writer waits this long for another process's batch
  FLUSH_POINTS = 8192,      // a full buffer is written at once
};
static const double FLUSH_SECONDS = 1.0;         // buffered points are at most this old
static const double DEFAULT_HEARTBEAT_S = 15.0;  // alive runs touch heartbeat_at this often
static const double STALE_HEARTBEAT_S = 300.0;   // runs on other hosts are dead after this

typedef struct metric_point {
  char *key;
  int64_t step;
  double value;
  double time;
} metric_point;

struct herd_run {
  herd_runlog *db;
  int64_t id;
  char uuid[37];
  int open;
  // The buffer is shared with the background thread, which flushes points left waiting.
  pthread_mutex_t buffer_lock;  // guards points, pending, capacity, last_flush
  metric_point *points;         // (pending) points not yet in the database
  int pending, capacity;
  double last_flush;
};

struct herd_runlog {
  sqlite3 *conn;
  char *path;
  char host[256];
  pthread_mutex_t lock;  // guards open_runs and the heartbeat settings
  herd_run **open_runs;
  int n_open, open_capacity;
  pthread_t heartbeat_thread;
  pthread_cond_t heartbeat_wake;
  int heartbeat_started, heartbeat_stopping;
  double heartbeat_s;
};

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int sqlite_status(int rc) {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return HERD_EBUSY;
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
      return HERD_ECORRUPT;
    case SQLITE_NOMEM:
      return HERD_ENOMEM;
    case SQLITE_CANTOPEN:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_READONLY:
    case SQLITE_PERM:
      return HERD_EIO;
    default:
      return HERD_EDB;
  }
}

static int db_error(const herd_runlog *db, sqlite3 *conn, int rc, const char *doing) {
  return herd_seterr(sqlite_status(rc), "run history '%s': %s: %s", db->path, doing,
                     conn ? sqlite3_errmsg(conn) : sqlite3_errstr(rc));
}

static int exec_sql(herd_runlog *db, sqlite3 *conn, const char *sql, const char *doing) {
  int rc = sqlite3_exec(conn, sql, NULL, NULL, NULL);
  return rc == SQLITE_OK ? HERD_OK : db_error(db, conn, rc, doing);
}

// Writers take the write lock up front: a busy timeout cannot rescue a read transaction that
// later tries to become a write transaction.
static int begin_write(herd_runlog *db, sqlite3 *conn) {
  return exec_sql(db, conn, "BEGIN IMMEDIATE", "cannot start a write transaction");
}

static int end_write(herd_runlog *db, sqlite3 *conn, int status) {
  if (status == HERD_OK) {
    int rc = sqlite3_exec(conn, "COMMIT", NULL, NULL, NULL);
    if (rc == SQLITE_OK) return HERD_OK;
    status = db_error(db, conn, rc, "cannot commit");
  }
  sqlite3_exec(conn, "ROLLBACK", NULL, NULL, NULL);
  return status;
}

static int prepare(herd_runlog *db, sqlite3 *conn, const char *sql, sqlite3_stmt **stmt) {
  int rc = sqlite3_prepare_v2(conn, sql, -1, stmt, NULL);
  return rc == SQLITE_OK ? HERD_OK : db_error(db, conn, rc, "cannot prepare a statement");
}

static int step_done(herd_runlog *db, sqlite3 *conn, sqlite3_stmt *stmt, const char *doing) {
  int rc = sqlite3_step(stmt);
  return rc == SQLITE_DONE || rc == SQLITE_ROW ? HERD_OK : db_error(db, conn, rc, doing);
}

static void bind_text_or_null(sqlite3_stmt *stmt, int index, const char *text) {
  if (text)
    sqlite3_bind_text(stmt, index, text, -1, SQLITE_TRANSIENT);
  else
    sqlite3_bind_null(stmt, index);
}

// ---------------------------------------------------------------- schema and migrations

static const int n_migrations = HERD_RUNLOG_SCHEMA_VERSION;

static int read_user_version(herd_runlog *db, int *version) {
  sqlite3_stmt *stmt;
  int status = prepare(db, db->conn, "PRAGMA user_version", &stmt);
  if (status) return status;
  int rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) *version = sqlite3_column_int(stmt, 0);
  sqlite3_finalize(stmt);
  return rc == SQLITE_ROW ? HERD_OK : db_error(db, db->conn, rc, "cannot read the schema version");
}

// Runs under the write lock so two processes creating one database do not both migrate it.
static int migrate(herd_runlog *db) {
  int version = 0;
  int status = read_user_version(db, &version);
  if (status) return status;
  if (version > n_migrations)
    return herd_seterr(HERD_ECORRUPT,
                       "run history '%s' has schema version %d, newer than this herd's %d; "
                       "upgrade herd to use it",
                       db->path, version, n_migrations);
  if (version == n_migrations) return HERD_OK;
  if ((status = begin_write(db, db->conn))) return status;
  status = read_user_version(db, &version);  // another process may have migrated meanwhile
  for (int v = version; status == HERD_OK && v < n_migrations; v++) {
    status = exec_sql(db, db->conn, herd_runlog_migrations[v], "cannot migrate the schema");
    if (status == HERD_OK) {
      char pragma[64];
      snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", v + 1);
      status = exec_sql(db, db->conn, pragma, "cannot record the schema version");
    }
  }
  return end_write(db, db->conn, status);
}

static void remove_open_run(herd_runlog *db, herd_run *run);

// ---------------------------------------------------------------- opening

static int open_connection(herd_runlog *db, const char *path, int flags, sqlite3 **out) {
  int open_flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX;
  if (flags & HERD_RUNLOG_CREATE) open_flags |= SQLITE_OPEN_CREATE;
  int rc = sqlite3_open_v2(path, out, open_flags, NULL);
  if (rc != SQLITE_OK) {
    int status = (rc & 0xff) == SQLITE_CANTOPEN && !(flags & HERD_RUNLOG_CREATE)
                     ? herd_seterr(HERD_ENOTFOUND, "no run history at '%s'", path)
                     : db_error(db, *out, rc, "cannot open");
    sqlite3_close(*out);
    *out = NULL;
    return status;
  }
  sqlite3_busy_timeout(*out, BUSY_TIMEOUT_MS);
  sqlite3_extended_result_codes(*out, 1);
  return HERD_OK;
}

// Switching a new database to WAL upgrades a read lock to a write lock, and SQLite does not call
// the busy handler for that upgrade (waiting there could deadlock), so concurrent openers of a
// new database retry here, up to the busy timeout.
static int switch_to_wal(herd_runlog *db) {
  double deadline = now_seconds() + BUSY_TIMEOUT_MS / 1000.0;
  for (;;) {
    int rc = sqlite3_exec(db->conn, "PRAGMA journal_mode = WAL", NULL, NULL, NULL);
    if (rc == SQLITE_OK) return HERD_OK;
    if ((rc & 0xff) != SQLITE_BUSY || now_seconds() > deadline)
      return db_error(db, db->conn, rc, "cannot switch to WAL");
    sqlite3_sleep(5);
  }
}

// Reading the schema version first makes a non-database fail before anything is written to it.
static int configure_connection(herd_runlog *db) {
  int version;
  int status = read_user_version(db, &version);
  if (status) return status;
  if (sqlite3_db_readonly(db->conn, "main") == 1)
    return herd_seterr(HERD_EIO, "run history '%s': the file is read-only", db->path);
  status = switch_to_wal(db);
  if (!status) status = exec_sql(db, db->conn, "PRAGMA synchronous = NORMAL", "cannot configure");
  if (!status) status = exec_sql(db, db->conn, "PRAGMA foreign_keys = ON", "cannot configure");
  if (!status) status = migrate(db);
  return status;
}

int herd_runlog_open(herd_runlog **out, const char *path, int flags) {
  *out = NULL;
  if (!path || !*path) return herd_seterr(HERD_EINVAL, "run history: empty database path");
  herd_runlog *db = calloc(1, sizeof *db);
  if (!db || !(db->path = strdup(path))) {
    free(db);
    return herd_seterr(HERD_ENOMEM, "run history: out of memory");
  }
  pthread_mutex_init(&db->lock, NULL);
  pthread_cond_init(&db->heartbeat_wake, NULL);
  db->heartbeat_s = DEFAULT_HEARTBEAT_S;
  if (gethostname(db->host, sizeof db->host - 1) != 0) strcpy(db->host, "unknown");
  int status = open_connection(db, path, flags, &db->conn);
  if (!status) status = configure_connection(db);
  if (status) {
    herd_runlog_close(db);
    return status;
  }
  *out = db;
  return HERD_OK;
}

static void stop_heartbeat(herd_runlog *db) {
  pthread_mutex_lock(&db->lock);
  int started = db->heartbeat_started;
  db->heartbeat_stopping = 1;
  pthread_cond_signal(&db->heartbeat_wake);
  pthread_mutex_unlock(&db->lock);
  if (started) pthread_join(db->heartbeat_thread, NULL);
  db->heartbeat_started = 0;
  db->heartbeat_stopping = 0;
}

void herd_runlog_close(herd_runlog *db) {
  if (!db) return;
  // Runs still open end as failed and are detached: their handles stay safe to use and free.
  while (db->n_open > 0) {
    herd_run *run = db->open_runs[db->n_open - 1];
    if (herd_run_finish(run, HERD_RUN_FAILED, "run history closed while the run was open") != 0)
      remove_open_run(db, run);
    run->open = 0;
    run->db = NULL;
  }
  stop_heartbeat(db);
  sqlite3_close(db->conn);
  pthread_mutex_destroy(&db->lock);
  pthread_cond_destroy(&db->heartbeat_wake);
  free(db->open_runs);
  free(db->path);
  free(db);
}

const char *herd_runlog_path(const herd_runlog *db) {
  return db->path;
}
struct sqlite3 *herd_runlog_sqlite(herd_runlog *db) {
  return db->conn;
}

int herd_runlog_schema_version(herd_runlog *db, int *version) {
  return read_user_version(db, version);
}

// ---------------------------------------------------------------- liveness

// Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), 0 if unknown.
// Together with the pid it names one process: a recycled pid has a different start time.
static int64_t process_start_ticks(pid_t pid) {
  char path[64], line[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *file = fopen(path, "r");
  if (!file) return 0;
  size_t got = fread(line, 1, sizeof line - 1, file);
  fclose(file);
  line[got] = '\0';
  const char *after_name = strrchr(line, ')');  // the command name may contain spaces
  if (!after_name) return 0;
  long long ticks = 0;
  // fields 3..21 are skipped; field 22 is starttime
  if (sscanf(after_name + 2,
             "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d "
             "%*d %*d %lld",
             &ticks) != 1)
    return 0;
  return ticks;
}

static int process_alive(pid_t pid, int64_t start_ticks) {
  if (kill(pid, 0) != 0 && errno == ESRCH) return 0;
  if (start_ticks == 0) return 1;
  int64_t now_ticks = process_start_ticks(pid);
  return now_ticks == 0 || now_ticks == start_ticks;
}

static int is_open_here(herd_runlog *db, int64_t run_id) {
  int found = 0;
  pthread_mutex_lock(&db->lock);
  for (int i = 0; i < db->n_open && !found; i++) found = db->open_runs[i]->id == run_id;
  pthread_mutex_unlock(&db->lock);
  return found;
}

static int run_is_dead(herd_runlog *db, sqlite3_stmt *row, double now) {
  int64_t id = sqlite3_column_int64(row, 0);
  pid_t pid = (pid_t)sqlite3_column_int64(row, 1);
  int64_t pid_start = sqlite3_column_int64(row, 2);
  const char *host = (const char *)sqlite3_column_text(row, 3);
  double heartbeat = sqlite3_column_double(row, 4);
  if (is_open_here(db, id)) return 0;
  if (host && strcmp(host, db->host) == 0 && !process_alive(pid, pid_start)) return 1;
  return now - heartbeat > STALE_HEARTBEAT_S;
}

static int mark_crashed(herd_runlog *db, int64_t run_id) {
  sqlite3_stmt *stmt;
  int status = prepare(db, db->conn,
                       "UPDATE runs SET status = 'crashed', ended_at = heartbeat_at,"
                       " error = 'process ' || pid || ' on ' || host ||"
                       " ' stopped without finishing the run'"
                       " WHERE id = ? AND status = 'running'",
                       &stmt);
  if (status) return status;
  sqlite3_bind_int64(stmt, 1, run_id);
  status = step_done(db, db->conn, stmt, "cannot mark a run crashed");
  sqlite3_finalize(stmt);
  return status;
}

int herd_runlog_gc(herd_runlog *db, int *marked) {
  if (marked) *marked = 0;
  int status = begin_write(db, db->conn);
  if (status) return status;
  sqlite3_stmt *rows;
  status = prepare(db, db->conn,
                   "SELECT id, pid, pid_start, host, heartbeat_at FROM runs"
                   " WHERE status = 'running'",
                   &rows);
  double now = now_seconds();
  int n = 0, rc = SQLITE_ROW;
  // Collect first, update after: a statement should not write the table it is reading.
  int64_t dead[256];
  while (!status && n < 256 && (rc = sqlite3_step(rows)) == SQLITE_ROW)
    if (run_is_dead(db, rows, now)) dead[n++] = sqlite3_column_int64(rows, 0);
  if (!status && rc != SQLITE_ROW && rc != SQLITE_DONE)
    status = db_error(db, db->conn, rc, "cannot list running runs");
  sqlite3_finalize(rows);
  for (int i = 0; i < n && !status; i++) status = mark_crashed(db, dead[i]);
  status = end_write(db, db->conn, status);
  if (!status && marked) *marked = n;
  if (!status && n == 256) return herd_runlog_gc(db, marked ? &(int){0} : NULL);
  return status;
}

// ---------------------------------------------------------------- heartbeat

static void beat_once(herd_runlog *db, sqlite3 *conn, const int64_t *ids, int n) {
  if (n == 0 || sqlite3_exec(conn, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) return;
  sqlite3_stmt *stmt;
  if (sqlite3_prepare_v2(conn, "UPDATE runs SET heartbeat_at = ? WHERE id = ?", -1, &stmt, NULL) ==
      SQLITE_OK) {
    double now = now_seconds();
    for (int i = 0; i < n; i++) {
      sqlite3_bind_double(stmt, 1, now);
      sqlite3_bind_int64(stmt, 2, ids[i]);
      sqlite3_step(stmt);
      sqlite3_reset(stmt);
    }
    sqlite3_finalize(stmt);
  }
  // A missed beat is harmless (the next one comes); the thread has nobody to report to.
  if (sqlite3_exec(conn, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
    sqlite3_exec(conn, "ROLLBACK", NULL, NULL, NULL);
  (void)db;
}

static int flush_locked(herd_run *run, sqlite3 *conn);

// Points that wait longer than FLUSH_SECONDS (a script that logs, then computes for an hour)
// are written by the background thread. Called with db->lock held.
static void flush_waiting_points(herd_runlog *db, sqlite3 *conn) {
  double now = now_seconds();
  for (int i = 0; i < db->n_open; i++) {
    herd_run *run = db->open_runs[i];
    pthread_mutex_lock(&run->buffer_lock);
    // A failed write keeps the points; the next round or the owner's flush retries.
    if (run->pending > 0 && now - run->last_flush >= FLUSH_SECONDS) flush_locked(run, conn);
    pthread_mutex_unlock(&run->buffer_lock);
  }
}

static void wait_seconds(herd_runlog *db, double seconds) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += (time_t)seconds;
  until.tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
  if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
  pthread_cond_timedwait(&db->heartbeat_wake, &db->lock, &until);
}

// The background thread: heartbeats of this connection's open runs and flushes of waiting
// points. It has its own connection: a connection's transaction state is shared by every thread
// using it, so its writes must not land inside the main thread's transactions.
static void *heartbeat_main(void *arg) {
  herd_runlog *db = arg;
  sqlite3 *conn = NULL;
  if (sqlite3_open_v2(db->path, &conn, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, NULL) !=
      SQLITE_OK) {
    sqlite3_close(conn);
    return NULL;
  }
  sqlite3_busy_timeout(conn, BUSY_TIMEOUT_MS);
  double last_beat = now_seconds();
  pthread_mutex_lock(&db->lock);
  while (!db->heartbeat_stopping) {
    double beat = db->heartbeat_s;
    wait_seconds(db, beat <= 0 ? 3600 : beat < FLUSH_SECONDS ? beat : FLUSH_SECONDS);
    if (db->heartbeat_stopping || db->heartbeat_s <= 0) continue;
    flush_waiting_points(db, conn);
    if (now_seconds() - last_beat < db->heartbeat_s) continue;
    int n = db->n_open < 64 ? db->n_open : 64;
    int64_t ids[64];
    for (int i = 0; i < n; i++) ids[i] = db->open_runs[i]->id;
    pthread_mutex_unlock(&db->lock);
    beat_once(db, conn, ids, n);
    last_beat = now_seconds();
    pthread_mutex_lock(&db->lock);
  }
  pthread_mutex_unlock(&db->lock);
  sqlite3_close(conn);
  return NULL;
}

// Started with the first open run, so a connection that only reads has no thread.
static void ensure_heartbeat(herd_runlog *db) {
  pthread_mutex_lock(&db->lock);
  if (!db->heartbeat_started && db->heartbeat_s > 0 && db->n_open > 0)
    db->heartbeat_started = pthread_create(&db->heartbeat_thread, NULL, heartbeat_main, db) == 0;
  pthread_mutex_unlock(&db->lock);
}

int herd_runlog_set_heartbeat(herd_runlog *db, double seconds) {
  if (!(seconds >= 0)) return herd_seterr(HERD_EINVAL, "heartbeat interval must be >= 0");
  pthread_mutex_lock(&db->lock);
  db->heartbeat_s = seconds;
  pthread_cond_signal(&db->heartbeat_wake);
  pthread_mutex_unlock(&db->lock);
  ensure_heartbeat(db);
  return HERD_OK;
}

// ---------------------------------------------------------------- runs

static int add_open_run(herd_runlog *db, herd_run *run) {
  int status = HERD_OK;
  pthread_mutex_lock(&db->lock);
  if (db->n_open == db->open_capacity) {
    int capacity = db->open_capacity ? 2 * db->open_capacity : 8;
    herd_run **grown = realloc(db->open_runs, capacity * sizeof *grown);
    if (grown)
      db->open_runs = grown, db->open_capacity = capacity;
    else
      status = herd_seterr(HERD_ENOMEM, "run history: out of memory");
  }
  if (!status) db->open_runs[db->n_open++] = run;
  pthread_mutex_unlock(&db->lock);
  return status;
}

static void remove_open_run(herd_runlog *db, herd_run *run) {
  pthread_mutex_lock(&db->lock);
  for (int i = 0; i < db->n_open; i++)
    if (db->open_runs[i] == run) db->open_runs[i] = db->open_runs[--db->n_open];
  pthread_mutex_unlock(&db->lock);
}

static void make_uuid(char out[37]) {
  uint8_t bytes[16];
  if (getrandom(bytes, sizeof bytes, 0) != (ssize_t)sizeof bytes) {
    uint64_t mix = (uint64_t)now_seconds() * 1000003u ^ (uint64_t)getpid();
    for (int i = 0; i < 16; i++) bytes[i] = (uint8_t)(mix >> (8 * (i % 8))) ^ (uint8_t)(i * 37);
  }
  bytes[6] = (bytes[6] & 0x0f) | 0x40;  // version 4 (random)
  bytes[8] = (bytes[8] & 0x3f) | 0x80;  // RFC 4122 variant
  char *p = out;
  for (int i = 0; i < 16; i++) {
    p += sprintf(p, "%02x", bytes[i]);
    if (i == 3 || i == 5 || i == 7 || i == 9) *p++ = '-';
  }
}

static int insert_run(herd_runlog *db, const herd_run_info *info, herd_run *run) {
  sqlite3_stmt *stmt;
  int status =
      prepare(db, db->conn,
              "INSERT INTO runs(uuid, name, parent_id, status, started_at, heartbeat_at,"
              " pid, pid_start, host, script, script_sha256, git_rev, git_dirty, seed, args_json)"
              " VALUES(?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
              &stmt);
  if (status) return status;
  double now = now_seconds();
  sqlite3_bind_text(stmt, 1, run->uuid, -1, SQLITE_STATIC);
  sqlite3_bind_text(stmt, 2, info->name, -1, SQLITE_STATIC);
  if (info->parent_id > 0) sqlite3_bind_int64(stmt, 3, info->parent_id);
  sqlite3_bind_double(stmt, 4, now);
  sqlite3_bind_double(stmt, 5, now);
  sqlite3_bind_int64(stmt, 6, getpid());
  sqlite3_bind_int64(stmt, 7, process_start_ticks(getpid()));
  sqlite3_bind_text(stmt, 8, db->host, -1, SQLITE_STATIC);
  bind_text_or_null(stmt, 9, info->script);
  bind_text_or_null(stmt, 10, info->script_sha256);
  bind_text_or_null(stmt, 11, info->git_rev);
  if (info->git_dirty >= 0) sqlite3_bind_int(stmt, 12, info->git_dirty ? 1 : 0);
  if (info->has_seed) sqlite3_bind_int64(stmt, 13, info->seed);
  bind_text_or_null(stmt, 14, info->args_json);
  int rc = sqlite3_step(stmt);
  sqlite3_finalize(stmt);
  if (rc != SQLITE_DONE) {
    if ((rc & 0xff) == SQLITE_CONSTRAINT && info->parent_id > 0)
      return herd_seterr(HERD_ENOTFOUND, "run history '%s': parent run %lld does not exist",
                         db->path, (long long)info->parent_id);
    return db_error(db, db->conn, rc, "cannot record the run");
  }
  run->id = sqlite3_last_insert_rowid(db->conn);
  return HERD_OK;
}

int herd_run_start(herd_runlog *db, const herd_run_info *info, herd_run **out) {
  *out = NULL;
  if (!info || !info->name || !*info->name)
    return herd_seterr(HERD_EINVAL, "run history: a run needs a non-empty name");
  int status = herd_runlog_gc(db, NULL);  // the next start finds runs left by dead processes
  if (status) return status;
  herd_run *run = calloc(1, sizeof *run);
  if (!run) return herd_seterr(HERD_ENOMEM, "run history: out of memory");
  pthread_mutex_init(&run->buffer_lock, NULL);
  run->db = db;
  make_uuid(run->uuid);
  if (!(status = begin_write(db, db->conn))) {
    status = insert_run(db, info, run);
    status = end_write(db, db->conn, status);
  }
  if (!status) {
    run->open = 1;
    run->last_flush = now_seconds();
    status = add_open_run(db, run);
  }
  if (!status && info->config_json) status = herd_run_set_config(run, info->config_json);
  if (status) {
    if (run->open) herd_run_finish(run, HERD_RUN_FAILED, herd_errmsg());
    char saved[1024];
    snprintf(saved, sizeof saved, "%s", herd_errmsg());
    herd_run_free(run);
    return herd_seterr(status, "%s", saved);
  }
  ensure_heartbeat(db);
  *out = run;
  return HERD_OK;
}

int64_t herd_run_id(const herd_run *run) {
  return run->id;
}
const char *herd_run_uuid(const herd_run *run) {
  return run->uuid;
}
int herd_run_is_open(const herd_run *run) {
  return run->open;
}

static int require_open(const herd_run *run) {
  if (run->open) return HERD_OK;
  return herd_seterr(HERD_ESTATE, "run %lld is already finished", (long long)run->id);
}

// Runs one UPDATE/INSERT with the run id as parameter 1 and a value bound by `bind`.
typedef void (*bind_fn)(sqlite3_stmt *stmt, const void *value);

static int write_one(herd_run *run, const char *sql, bind_fn bind, const void *value,
                     const char *doing) {
  int status = require_open(run);
  if (status) return status;
  herd_runlog *db = run->db;
  if ((status = begin_write(db, db->conn))) return status;
  sqlite3_stmt *stmt;
  if (!(status = prepare(db, db->conn, sql, &stmt))) {
    sqlite3_bind_int64(stmt, 1, run->id);
    bind(stmt, value);
    status = step_done(db, db->conn, stmt, doing);
    sqlite3_finalize(stmt);
  }
  return end_write(db, db->conn, status);
}

static void bind_text2(sqlite3_stmt *stmt, const void *value) {
  sqlite3_bind_text(stmt, 2, value, -1, SQLITE_TRANSIENT);
}
// A parent id of 0 (or less) means "no parent".
static void bind_parent2(sqlite3_stmt *stmt, const void *value) {
  int64_t number = *(const int64_t *)value;
  if (number > 0)
    sqlite3_bind_int64(stmt, 2, number);
  else
    sqlite3_bind_null(stmt, 2);
}

static void bind_seed2(sqlite3_stmt *stmt, const void *value) {
  sqlite3_bind_int64(stmt, 2, *(const int64_t *)value);
}

static void bind_script2(sqlite3_stmt *stmt, const void *value) {
  const char *const *texts = value;
  sqlite3_bind_text(stmt, 2, texts[0], -1, SQLITE_TRANSIENT);
  bind_text_or_null(stmt, 3, texts[1]);
  bind_text_or_null(stmt, 4, texts[2]);
}

int herd_run_set_name(herd_run *run, const char *name) {
  if (!name || !*name) return herd_seterr(HERD_EINVAL, "run name must be a non-empty string");
  return write_one(run, "UPDATE runs SET name = ?2 WHERE id = ?1", bind_text2, name,
                   "cannot rename the run");
}

int herd_run_set_parent(herd_run *run, int64_t parent_id) {
  int status = write_one(run, "UPDATE runs SET parent_id = ?2 WHERE id = ?1", bind_parent2,
                         &parent_id, "cannot set the parent run");
  if (status == HERD_EDB && strstr(herd_errmsg(), "FOREIGN KEY"))
    return herd_seterr(HERD_ENOTFOUND, "parent run %lld does not exist", (long long)parent_id);
  return status;
}

int herd_run_set_seed(herd_run *run, int64_t seed) {
  return write_one(run, "UPDATE runs SET seed = ?2 WHERE id = ?1", bind_seed2, &seed,
                   "cannot record the seed");
}

int herd_run_set_script(herd_run *run, const char *path, const char *sha256,
                        const char *args_json) {
  if (!path || !*path) return herd_seterr(HERD_EINVAL, "script path must be a non-empty string");
  const char *texts[3] = {path, sha256, args_json};
  return write_one(run,
                   "UPDATE runs SET script = ?2, script_sha256 = ?3, args_json = ?4 WHERE id = ?1",
                   bind_script2, texts, "cannot record the script");
}

int herd_run_add_tag(herd_run *run, const char *tag) {
  if (!tag || !*tag) return herd_seterr(HERD_EINVAL, "a tag must be a non-empty string");
  return write_one(run, "INSERT OR IGNORE INTO tags(run_id, tag) VALUES(?1, ?2)", bind_text2, tag,
                   "cannot tag the run");
}

// ---------------------------------------------------------------- params

static int insert_param(herd_run *run, sqlite3_stmt *stmt, const char *key, json_t *value) {
  sqlite3_reset(stmt);
  sqlite3_bind_int64(stmt, 1, run->id);
  sqlite3_bind_text(stmt, 2, key, -1, SQLITE_TRANSIENT);
  switch (json_typeof(value)) {
    case JSON_STRING:
      sqlite3_bind_text(stmt, 3, json_string_value(value), -1, SQLITE_TRANSIENT);
      break;
    case JSON_INTEGER:
      sqlite3_bind_int64(stmt, 3, json_integer_value(value));
      break;
    case JSON_REAL:
      sqlite3_bind_double(stmt, 3, json_real_value(value));
      break;
    case JSON_TRUE:
      sqlite3_bind_text(stmt, 3, "true", -1, SQLITE_STATIC);
      break;
    case JSON_FALSE:
      sqlite3_bind_text(stmt, 3, "false", -1, SQLITE_STATIC);
      break;
    case JSON_OBJECT:
      sqlite3_bind_text(stmt, 3, "{}", -1, SQLITE_STATIC);
      break;
    case JSON_ARRAY:
      sqlite3_bind_text(stmt, 3, "[]", -1, SQLITE_STATIC);
      break;
    case JSON_NULL:
      sqlite3_bind_null(stmt, 3);
      break;
  }
  return step_done(run->db, run->db->conn, stmt, "cannot record a param");
}

// Depth-first over the JSON value: leaves become params named by their dotted path.
static int flatten_params(herd_run *run, sqlite3_stmt *stmt, const char *key, json_t *value) {
  size_t n = json_is_object(value)  ? json_object_size(value)
             : json_is_array(value) ? json_array_size(value)
                                    : 0;
  if (n == 0) return *key ? insert_param(run, stmt, key, value) : HERD_OK;  // {} config: none
  int status = HERD_OK;
  if (json_is_object(value)) {
    const char *child_key;
    json_t *child;
    json_object_foreach(value, child_key, child) {
      char *path = NULL;
      if (asprintf(&path, "%s%s%s", key, *key ? "." : "", child_key) < 0)
        return herd_seterr(HERD_ENOMEM, "run history: out of memory");
      status = flatten_params(run, stmt, path, child);
      free(path);
      if (status) return status;
    }
    return HERD_OK;
  }
  for (size_t i = 0; i < n && !status; i++) {
    char *path = NULL;
    if (asprintf(&path, "%s%s%zu", key, *key ? "." : "", i + 1) < 0)
      return herd_seterr(HERD_ENOMEM, "run history: out of memory");
    status = flatten_params(run, stmt, path, json_array_get(value, i));
    free(path);
  }
  return status;
}

static int write_params(herd_run *run, const char *key, json_t *value, const char *config_json) {
  herd_runlog *db = run->db;
  int status = begin_write(db, db->conn);
  if (status) return status;
  sqlite3_stmt *stmt;
  if (config_json &&
      !(status = prepare(db, db->conn, "UPDATE runs SET config_json = ? WHERE id = ?", &stmt))) {
    sqlite3_bind_text(stmt, 1, config_json, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 2, run->id);
    status = step_done(db, db->conn, stmt, "cannot record the config");
    sqlite3_finalize(stmt);
  }
  if (!status && !(status = prepare(db, db->conn,
                                    "INSERT OR REPLACE INTO params(run_id, key, value)"
                                    " VALUES(?, ?, ?)",
                                    &stmt))) {
    status = flatten_params(run, stmt, key, value);
    sqlite3_finalize(stmt);
  }
  return end_write(db, db->conn, status);
}

static json_t *parse_json(const char *text, const char *what, int *status) {
  json_error_t error;
  json_t *value = json_loads(text ? text : "", JSON_DECODE_ANY, &error);
  if (!value)
    *status = herd_seterr(HERD_EINVAL, "%s is not valid JSON: %s (line %d, column %d)", what,
                          error.text, error.line, error.column);
  return value;
}

int herd_run_set_config(herd_run *run, const char *json) {
  int status = require_open(run);
  if (status) return status;
  json_t *config = parse_json(json, "config", &status);
  if (!config) return status;
  if (!json_is_object(config)) {
    json_decref(config);
    return herd_seterr(HERD_EINVAL, "config must be a JSON object (a Lua table with names)");
  }
  // The text is kept as given (not re-printed) so numbers keep the writer's shortest form.
  status = write_params(run, "", config, json);
  json_decref(config);
  return status;
}

int herd_run_param(herd_run *run, const char *key, const char *json_value) {
  int status = require_open(run);
  if (status) return status;
  if (!key || !*key) return herd_seterr(HERD_EINVAL, "a param needs a non-empty name");
  json_t *value = parse_json(json_value, "param value", &status);
  if (!value) return status;
  status = write_params(run, key, value, NULL);
  json_decref(value);
  return status;
}

// ---------------------------------------------------------------- metrics

static void free_points(herd_run *run, int n) {
  for (int i = 0; i < n; i++) free(run->points[i].key);
  if (n < run->pending)
    memmove(run->points, run->points + n, (run->pending - n) * sizeof *run->points);
  run->pending -= n;
}

static int insert_points(herd_run *run, sqlite3 *conn) {
  herd_runlog *db = run->db;
  sqlite3_stmt *stmt;
  int status = prepare(
      db, conn, "INSERT INTO metrics(run_id, key, step, value, time) VALUES(?, ?, ?, ?, ?)", &stmt);
  for (int i = 0; !status && i < run->pending; i++) {
    const metric_point *point = &run->points[i];
    sqlite3_reset(stmt);
    sqlite3_bind_int64(stmt, 1, run->id);
    sqlite3_bind_text(stmt, 2, point->key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 3, point->step);
    // SQLite stores a bound NaN as NULL; the text 'NaN' keeps "was NaN" apart from "no value".
    if (isnan(point->value))
      sqlite3_bind_text(stmt, 4, "NaN", 3, SQLITE_STATIC);
    else
      sqlite3_bind_double(stmt, 4, point->value);
    sqlite3_bind_double(stmt, 5, point->time);
    status = step_done(db, conn, stmt, "cannot write metrics");
  }
  sqlite3_finalize(stmt);
  return status;
}

// Writes the buffered points through `conn`; the caller holds run->buffer_lock.
static int flush_locked(herd_run *run, sqlite3 *conn) {
  if (run->pending == 0) return HERD_OK;
  herd_runlog *db = run->db;
  if (!db)
    return herd_seterr(HERD_ESTATE, "run %lld: its run history was closed", (long long)run->id);
  int status = begin_write(db, conn);
  if (!status) {
    status = insert_points(run, conn);
    if (!status) {
      char sql[96];
      snprintf(sql, sizeof sql, "UPDATE runs SET heartbeat_at = %.6f WHERE id = %lld",
               now_seconds(), (long long)run->id);
      status = exec_sql(db, conn, sql, "cannot update the heartbeat");
    }
    status = end_write(db, conn, status);
  }
  if (status)
    return herd_seterr(status, "run %lld: %d metric points not written (kept in memory): %s",
                       (long long)run->id, run->pending, herd_errmsg());
  free_points(run, run->pending);
  run->last_flush = now_seconds();
  return HERD_OK;
}

int herd_run_flush(herd_run *run) {
  pthread_mutex_lock(&run->buffer_lock);
  int status = flush_locked(run, run->db ? run->db->conn : NULL);
  pthread_mutex_unlock(&run->buffer_lock);
  return status;
}

int herd_run_pending(herd_run *run) {
  pthread_mutex_lock(&run->buffer_lock);
  int pending = run->pending;
  pthread_mutex_unlock(&run->buffer_lock);
  return pending;
}

static int append_point(herd_run *run, char *key, int64_t step, double value, int *flush_due) {
  if (run->pending == run->capacity) {
    int capacity = run->capacity ? 2 * run->capacity : 256;
    metric_point *grown = realloc(run->points, capacity * sizeof *grown);
    if (!grown) return herd_seterr(HERD_ENOMEM, "run history: out of memory");
    run->points = grown, run->capacity = capacity;
  }
  double now = now_seconds();
  run->points[run->pending++] = (metric_point){key, step, value, now};
  *flush_due = run->pending >= FLUSH_POINTS || now - run->last_flush >= FLUSH_SECONDS;
  return HERD_OK;
}

int herd_run_log(herd_run *run, const char *key, int64_t step, double value) {
  int status = require_open(run);
  if (status) return status;
  if (!key || !*key) return herd_seterr(HERD_EINVAL, "a metric needs a non-empty name");
  char *key_copy = strdup(key);
  if (!key_copy) return herd_seterr(HERD_ENOMEM, "run history: out of memory");
  int flush_due = 0;
  pthread_mutex_lock(&run->buffer_lock);
  status = append_point(run, key_copy, step, value, &flush_due);
  pthread_mutex_unlock(&run->buffer_lock);
  if (status) free(key_copy);
  return status ? status : flush_due ? herd_run_flush(run) : HERD_OK;
}

// ---------------------------------------------------------------- artifacts

int herd_run_artifact(herd_run *run, const char *name, const char *path, const char *kind) {
  int status = require_open(run);
  if (status) return status;
  if (!name || !*name) return herd_seterr(HERD_EINVAL, "an artifact needs a non-empty name");
  char hex[65];
  uint64_t bytes = 0;
  if ((status = herd_sha256_file(path, hex, &bytes)))
    return herd_seterr(status, "artifact '%s': %s", name, herd_errmsg());
  char *absolute = realpath(path, NULL);
  herd_runlog *db = run->db;
  sqlite3_stmt *stmt;
  if (!(status = begin_write(db, db->conn)) &&
      !(status = prepare(db, db->conn,
                         "INSERT OR REPLACE INTO artifacts(run_id, name, kind, path, sha256, bytes,"
                         " created_at) VALUES(?, ?, ?, ?, ?, ?, ?)",
                         &stmt))) {
    sqlite3_bind_int64(stmt, 1, run->id);
    sqlite3_bind_text(stmt, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 3, kind && *kind ? kind : "file", -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 4, absolute ? absolute : path, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 5, hex, 64, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 6, (sqlite3_int64)bytes);
    sqlite3_bind_double(stmt, 7, now_seconds());
    status = step_done(db, db->conn, stmt, "cannot record the artifact");
    sqlite3_finalize(stmt);
    status = end_write(db, db->conn, status);
  }
  free(absolute);
  return status;
}

// ---------------------------------------------------------------- finishing

const char *herd_run_status_name(herd_run_status status) {
  static const char *const names[] = {"running", "finished", "failed", "killed", "crashed"};
  return status >= HERD_RUN_RUNNING && status <= HERD_RUN_CRASHED ? names[status] : "unknown";
}

int herd_run_finish(herd_run *run, herd_run_status run_status, const char *error) {
  int status = require_open(run);
  if (status) return status;
  if (run_status != HERD_RUN_FINISHED && run_status != HERD_RUN_FAILED &&
      run_status != HERD_RUN_KILLED)
    return herd_seterr(HERD_EINVAL, "a run finishes as finished, failed or killed");
  if ((status = herd_run_flush(run))) return status;
  herd_runlog *db = run->db;
  sqlite3_stmt *stmt;
  if ((status = begin_write(db, db->conn))) return status;
  if (!(status = prepare(db, db->conn,
                         "UPDATE runs SET status = ?, ended_at = ?, heartbeat_at = ?, error = ?"
                         " WHERE id = ?",
                         &stmt))) {
    double now = now_seconds();
    sqlite3_bind_text(stmt, 1, herd_run_status_name(run_status), -1, SQLITE_STATIC);
    sqlite3_bind_double(stmt, 2, now);
    sqlite3_bind_double(stmt, 3, now);
    bind_text_or_null(stmt, 4, error);
    sqlite3_bind_int64(stmt, 5, run->id);
    status = step_done(db, db->conn, stmt, "cannot record the end of the run");
    sqlite3_finalize(stmt);
  }
  if ((status = end_write(db, db->conn, status))) return status;
  run->open = 0;
  remove_open_run(db, run);
  return HERD_OK;
}

void herd_run_free(herd_run *run) {
  if (!run) return;
  if (run->open && herd_run_finish(run, HERD_RUN_FAILED, "run handle freed while open") != 0)
    remove_open_run(run->db, run);  // the row stays 'running' and gc will find it crashed
  free_points(run, run->pending);
  free(run->points);
  pthread_mutex_destroy(&run->buffer_lock);
  free(run);
}
