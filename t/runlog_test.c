// Tests of runtime/runlog (the SQLite run history) and runtime/sha256.
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "error.h"
#include "runlog.h"
#include "sha256.h"

static char test_dir[256];
static char db_path[300];

static void make_test_dir(void) {
  snprintf(test_dir, sizeof test_dir, "%s/herd-runlog-XXXXXX",
           getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  cr_assert_not_null(mkdtemp(test_dir));
  snprintf(db_path, sizeof db_path, "%s/runs.db", test_dir);
}

static void remove_test_dir(void) {
  char command[400];
  snprintf(command, sizeof command, "rm -rf '%s'", test_dir);
  cr_assert_eq(system(command), 0);
}

TestSuite(runlog, .init = make_test_dir, .fini = remove_test_dir, .timeout = 120);
TestSuite(sha256);

// ---------------------------------------------------------------- helpers

static herd_runlog *open_db(void) {
  herd_runlog *db = NULL;
  int status = herd_runlog_open(&db, db_path, HERD_RUNLOG_CREATE);
  cr_assert_eq(status, HERD_OK, "open failed: %s", herd_errmsg());
  herd_runlog_set_heartbeat(db, 0);
  return db;
}

static herd_run *start_run(herd_runlog *db, const char *name, const char *config) {
  herd_run_info info = {.name = name, .git_dirty = -1, .config_json = config};
  herd_run *run = NULL;
  int status = herd_run_start(db, &info, &run);
  cr_assert_eq(status, HERD_OK, "start failed: %s", herd_errmsg());
  return run;
}

// One value from a query on a separate connection, as text ("" for NULL).
static void query_text(const char *sql, char *out, size_t size) {
  sqlite3 *conn;
  cr_assert_eq(sqlite3_open_v2(db_path, &conn, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_stmt *stmt;
  cr_assert_eq(sqlite3_prepare_v2(conn, sql, -1, &stmt, NULL), SQLITE_OK, "%s: %s", sql,
               sqlite3_errmsg(conn));
  out[0] = '\0';
  if (sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_type(stmt, 0) != SQLITE_NULL)
    snprintf(out, size, "%s", (const char *)sqlite3_column_text(stmt, 0));
  sqlite3_finalize(stmt);
  sqlite3_close(conn);
}

static long long query_int(const char *sql) {
  char text[64];
  query_text(sql, text, sizeof text);
  return atoll(text);
}

static void file_digest(const char *path, char hex[65]) {
  uint64_t bytes;
  cr_assert_eq(herd_sha256_file(path, hex, &bytes), HERD_OK, "%s", herd_errmsg());
}

static void write_file(const char *path, const char *bytes, size_t len) {
  FILE *file = fopen(path, "wb");
  cr_assert_not_null(file);
  cr_assert_eq(fwrite(bytes, 1, len, file), len);
  fclose(file);
}

// ---------------------------------------------------------------- sha256 (FIPS 180-4 vectors)

Test(sha256, known_vectors) {
  char hex[65];
  herd_sha256_hex("", 0, hex);
  cr_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  herd_sha256_hex("abc", 3, hex);
  cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const char *two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  herd_sha256_hex(two_blocks, strlen(two_blocks), hex);
  cr_assert_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

Test(sha256, million_a_in_odd_pieces) {
  herd_sha256 ctx;
  herd_sha256_init(&ctx);
  char piece[997];
  memset(piece, 'a', sizeof piece);
  size_t left = 1000000;
  while (left > 0) {
    size_t take = left < sizeof piece ? left : sizeof piece;
    herd_sha256_update(&ctx, piece, take);
    left -= take;
  }
  uint8_t digest[32];
  herd_sha256_final(&ctx, digest);
  char hex[65];
  for (int i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", digest[i]);
  cr_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

Test(sha256, missing_file_names_the_path) {
  char hex[65];
  cr_assert_eq(herd_sha256_file("/nonexistent/file.bin", hex, NULL), HERD_EIO);
  cr_assert(strstr(herd_errmsg(), "/nonexistent/file.bin"), "%s", herd_errmsg());
}

// ---------------------------------------------------------------- schema

Test(runlog, creates_schema_and_reopens) {
  herd_runlog *db = open_db();
  int version = 0;
  cr_assert_eq(herd_runlog_schema_version(db, &version), HERD_OK);
  cr_assert_eq(version, HERD_RUNLOG_SCHEMA_VERSION);
  herd_runlog_close(db);
  db = open_db();  // a second open migrates nothing and succeeds
  herd_runlog_close(db);
  char mode[32];
  query_text("PRAGMA journal_mode", mode, sizeof mode);
  cr_assert_str_eq(mode, "wal");
  cr_assert_eq(query_int("SELECT count(*) FROM sqlite_master WHERE name ="
                         " 'metrics_by_run_key_step'"),
               1);
}

Test(runlog, missing_database_without_create) {
  herd_runlog *db = NULL;
  cr_assert_eq(herd_runlog_open(&db, db_path, 0), HERD_ENOTFOUND);
  cr_assert_null(db);
  cr_assert(strstr(herd_errmsg(), db_path), "%s", herd_errmsg());
  cr_assert_neq(access(db_path, F_OK), 0, "the file must not be created");
}

Test(runlog, corrupt_file_is_refused_untouched) {
  char garbage[8192];
  for (size_t i = 0; i < sizeof garbage; i++) garbage[i] = (char)(i * 7 + 3);
  write_file(db_path, garbage, sizeof garbage);
  char before[65], after[65];
  file_digest(db_path, before);
  herd_runlog *db = NULL;
  int status = herd_runlog_open(&db, db_path, HERD_RUNLOG_CREATE);
  cr_assert_eq(status, HERD_ECORRUPT, "status %d: %s", status, herd_errmsg());
  cr_assert(strstr(herd_errmsg(), "not a database"), "%s", herd_errmsg());
  file_digest(db_path, after);
  cr_assert_str_eq(before, after);
  char wal[320];
  snprintf(wal, sizeof wal, "%s-wal", db_path);
  cr_assert_neq(access(wal, F_OK), 0, "no WAL file may appear next to a foreign file");
}

Test(runlog, newer_schema_is_refused_untouched) {
  herd_runlog *db = open_db();
  herd_runlog_close(db);
  sqlite3 *conn;
  sqlite3_open(db_path, &conn);
  sqlite3_exec(conn, "PRAGMA user_version = 99", NULL, NULL, NULL);
  sqlite3_close(conn);
  cr_assert_eq(herd_runlog_open(&db, db_path, HERD_RUNLOG_CREATE), HERD_ECORRUPT);
  cr_assert(strstr(herd_errmsg(), "newer"), "%s", herd_errmsg());
  cr_assert_eq(query_int("PRAGMA user_version"), 99);
}

Test(runlog, unwritable_location) {
  herd_runlog *db = NULL;
  int status = herd_runlog_open(&db, "/nonexistent-dir/runs.db", HERD_RUNLOG_CREATE);
  cr_assert_eq(status, HERD_EIO, "status %d: %s", status, herd_errmsg());
  cr_assert(strstr(herd_errmsg(), "/nonexistent-dir/runs.db"), "%s", herd_errmsg());
  status = herd_runlog_open(&db, test_dir, HERD_RUNLOG_CREATE);  // a directory
  cr_assert_lt(status, 0);
  cr_assert(strstr(herd_errmsg(), test_dir), "%s", herd_errmsg());
}

Test(runlog, read_only_file_is_refused_untouched) {
  if (geteuid() == 0) cr_skip_test("root can write read-only files");
  herd_runlog *db = open_db();
  herd_run *run = start_run(db, "kept", NULL);
  herd_run_finish(run, HERD_RUN_FINISHED, NULL);
  herd_run_free(run);
  herd_runlog_close(db);
  chmod(db_path, 0444);
  char before[65], after[65];
  file_digest(db_path, before);
  cr_assert_eq(herd_runlog_open(&db, db_path, HERD_RUNLOG_CREATE), HERD_EIO);
  cr_assert(strstr(herd_errmsg(), "read-only"), "%s", herd_errmsg());
  file_digest(db_path, after);
  cr_assert_str_eq(before, after);
}

// ---------------------------------------------------------------- runs, params, metrics

Test(runlog, run_lifecycle) {
  herd_runlog *db = open_db();
  herd_run_info info = {.name = "sft",
                        .script = "experiments/sft.lua",
                        .script_sha256 = "ab",
                        .git_rev = "deadbeef",
                        .git_dirty = 1,
                        .has_seed = 1,
                        .seed = 7,
                        .args_json = "[\"--fast\"]"};
  herd_run *run = NULL;
  cr_assert_eq(herd_run_start(db, &info, &run), HERD_OK, "%s", herd_errmsg());
  cr_assert_eq(herd_run_id(run), 1);
  cr_assert_eq(strlen(herd_run_uuid(run)), 36);
  cr_assert_eq(herd_run_add_tag(run, "baseline"), HERD_OK);
  cr_assert_eq(herd_run_set_name(run, "sft-2"), HERD_OK);
  char text[256];
  query_text("SELECT status FROM runs WHERE id = 1", text, sizeof text);
  cr_assert_str_eq(text, "running");
  cr_assert_eq(herd_run_finish(run, HERD_RUN_FINISHED, NULL), HERD_OK, "%s", herd_errmsg());
  query_text(
      "SELECT name || ' ' || status || ' ' || script || ' ' || git_rev || ' ' || git_dirty"
      " || ' ' || seed || ' ' || pid || ' ' || args_json FROM runs",
      text, sizeof text);
  char expected[256];
  snprintf(expected, sizeof expected,
           "sft-2 finished experiments/sft.lua deadbeef 1 7 %d [\"--fast\"]", (int)getpid());
  cr_assert_str_eq(text, expected);
  cr_assert_eq(query_int("SELECT ended_at >= started_at FROM runs"), 1);
  cr_assert_eq(query_int("SELECT count(*) FROM tags WHERE tag = 'baseline'"), 1);
  // a finished run takes no more writes
  cr_assert_eq(herd_run_log(run, "loss", 1, 1.0), HERD_ESTATE);
  cr_assert_eq(herd_run_finish(run, HERD_RUN_FINISHED, NULL), HERD_ESTATE);
  herd_run_free(run);
  herd_runlog_close(db);
}

Test(runlog, failed_run_keeps_its_error) {
  herd_runlog *db = open_db();
  herd_run *run = start_run(db, "x", NULL);
  cr_assert_eq(herd_run_finish(run, HERD_RUN_FAILED, "loss is NaN at step 12"), HERD_OK);
  char text[128];
  query_text("SELECT status || ': ' || error FROM runs", text, sizeof text);
  cr_assert_str_eq(text, "failed: loss is NaN at step 12");
  herd_run_free(run);
  herd_runlog_close(db);
}

Test(runlog, freeing_an_open_run_marks_it_failed) {
  herd_runlog *db = open_db();
  herd_run_free(start_run(db, "x", NULL));
  char text[128];
  query_text("SELECT status FROM runs", text, sizeof text);
  cr_assert_str_eq(text, "failed");
  herd_runlog_close(db);
}

Test(runlog, config_is_flattened_into_params) {
  herd_runlog *db = open_db();
  const char *config =
      "{\"empty\":{},\"gatt\":true,\"layers\":[4,8],\"name\":\"a b\",\"none\":null,"
      "\"ppo\":{\"beta\":0.01,\"clip\":0.2}}";
  herd_run *run = start_run(db, "ppo", config);
  char text[256];
  query_text(
      "SELECT group_concat(key || '=' || quote(value), ' ') FROM"
      " (SELECT key, value FROM params ORDER BY key)",
      text, sizeof text);
  cr_assert_str_eq(text,
                   "empty='{}' gatt='true' layers.1=4 layers.2=8 name='a b' none=NULL"
                   " ppo.beta=0.01 ppo.clip=0.2");
  query_text("SELECT config_json FROM runs", text, sizeof text);
  cr_assert_str_eq(text, config);
  cr_assert_eq(herd_run_param(run, "tokens", "123"), HERD_OK);
  cr_assert_eq(herd_run_param(run, "opt", "{\"lr\": 1e-5}"), HERD_OK);
  cr_assert_eq(query_int("SELECT value FROM params WHERE key = 'tokens'"), 123);
  query_text("SELECT value FROM params WHERE key = 'opt.lr'", text, sizeof text);
  cr_assert_str_eq(text, "1.0e-05");
  cr_assert_eq(herd_run_set_config(run, "[1, 2]"), HERD_EINVAL);
  cr_assert_eq(herd_run_set_config(run, "{bad json"), HERD_EINVAL);
  cr_assert(strstr(herd_errmsg(), "not valid JSON"), "%s", herd_errmsg());
  herd_run_free(run);
  herd_runlog_close(db);
}

Test(runlog, metrics_keep_nan_apart_from_null) {
  herd_runlog *db = open_db();
  herd_run *run = start_run(db, "m", NULL);
  cr_assert_eq(herd_run_log(run, "loss", 1, 0.5), HERD_OK);
  cr_assert_eq(herd_run_log(run, "loss", 2, NAN), HERD_OK);
  cr_assert_eq(herd_run_log(run, "loss", 3, INFINITY), HERD_OK);
  cr_assert_eq(herd_run_log(run, "loss", 4, -INFINITY), HERD_OK);
  cr_assert_eq(herd_run_flush(run), HERD_OK, "%s", herd_errmsg());
  cr_assert_eq(herd_run_pending(run), 0);
  char text[128];
  query_text(
      "SELECT group_concat(typeof(value) || ':' || value, ' ') FROM"
      " (SELECT value FROM metrics ORDER BY step)",
      text, sizeof text);
  cr_assert_str_eq(text, "real:0.5 text:NaN real:Inf real:-Inf");
  cr_assert_eq(query_int("SELECT count(*) FROM metrics WHERE value IS NULL"), 0);
  herd_run_free(run);
  herd_runlog_close(db);
}

Test(runlog, metrics_are_batched_and_flushed_at_finish) {
  herd_runlog *db = open_db();
  herd_run *run = start_run(db, "m", NULL);
  for (int step = 0; step < 100; step++) herd_run_log(run, "loss", step, 1.0 / (step + 1));
  cr_assert_gt(herd_run_pending(run), 0, "points should wait in the buffer");
  cr_assert_eq(query_int("SELECT count(*) FROM metrics"), 100 - herd_run_pending(run));
  cr_assert_eq(herd_run_finish(run, HERD_RUN_FINISHED, NULL), HERD_OK);
  cr_assert_eq(query_int("SELECT count(*) FROM metrics"), 100);
  cr_assert_eq(query_int("SELECT count(DISTINCT step) FROM metrics WHERE key = 'loss'"), 100);
  herd_run_free(run);
  herd_runlog_close(db);
}

Test(runlog, waiting_points_are_written_by_the_background_thread) {
  herd_runlog *db = open_db();
  herd_run *run = start_run(db, "idle", NULL);
  herd_runlog_set_heartbeat(db, 0.1);
  for (int step = 1; step <= 3; step++) herd_run_log(run, "loss", step, 1.0);
  cr_assert_eq(query_int("SELECT count(*) FROM metrics"), 0, "still buffered");
  for (int tries = 0; tries < 40 && query_int("SELECT count(*) FROM metrics") < 3; tries++)
    usleep(100 * 1000);  // no logging call comes: the background thread must write them
  cr_assert_eq(query_int("SELECT count(*) FROM metrics"), 3);
  cr_assert_eq(herd_run_pending(run), 0);
  herd_run_finish(run, HERD_RUN_FINISHED, NULL);
  herd_run_free(run);
  herd_runlog_close(db);
}

Test(runlog, artifact_records_sha256_and_size) {
  herd_runlog *db = open_db();
  herd_run *run = start_run(db, "a", NULL);
  char path[320];
  snprintf(path, sizeof path, "%s/model.bin", test_dir);
  write_file(path, "abc", 3);
  cr_assert_eq(herd_run_artifact(run, "model", path, "checkpoint"), HERD_OK, "%s", herd_errmsg());
  char text[256];
  query_text("SELECT kind || ' ' || bytes || ' ' || sha256 FROM artifacts", text, sizeof text);
  cr_assert_str_eq(text,
                   "checkpoint 3 ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  cr_assert_eq(herd_run_artifact(run, "gone", "/nonexistent/x", NULL), HERD_EIO);
  cr_assert(strstr(herd_errmsg(), "artifact 'gone'"), "%s", herd_errmsg());
  herd_run_free(run);
  herd_runlog_close(db);
}

Test(runlog, unknown_parent_is_an_error) {
  herd_runlog *db = open_db();
  herd_run_info info = {.name = "child", .git_dirty = -1, .parent_id = 42};
  herd_run *run = NULL;
  cr_assert_eq(herd_run_start(db, &info, &run), HERD_ENOTFOUND);
  cr_assert(strstr(herd_errmsg(), "parent run 42"), "%s", herd_errmsg());
  cr_assert_null(run);
  cr_assert_eq(query_int("SELECT count(*) FROM runs"), 0);
  herd_runlog_close(db);
}

Test(runlog, empty_names_are_refused) {
  herd_runlog *db = open_db();
  herd_run_info info = {.name = "", .git_dirty = -1};
  herd_run *run = NULL;
  cr_assert_eq(herd_run_start(db, &info, &run), HERD_EINVAL);
  run = start_run(db, "ok", NULL);
  cr_assert_eq(herd_run_log(run, "", 1, 1.0), HERD_EINVAL);
  cr_assert_eq(herd_run_add_tag(run, ""), HERD_EINVAL);
  herd_run_free(run);
  herd_runlog_close(db);
}

Test(runlog, closing_the_database_finishes_and_detaches_open_runs) {
  herd_runlog *db = open_db();
  herd_run *run = start_run(db, "orphan", NULL);
  herd_run_log(run, "loss", 1, 2.0);
  herd_runlog_close(db);
  cr_assert_eq(herd_run_log(run, "loss", 2, 1.0), HERD_ESTATE);
  cr_assert_eq(herd_run_flush(run), HERD_OK);
  herd_run_free(run);  // must not touch the closed database
  char text[128];
  query_text("SELECT status || ' ' || error FROM runs", text, sizeof text);
  cr_assert_str_eq(text, "failed run history closed while the run was open");
  cr_assert_eq(query_int("SELECT count(*) FROM metrics"), 1, "its buffered point was written");
}

// ---------------------------------------------------------------- crashes

// A child process starts a run, logs, and dies by SIGKILL without finishing it.
static void start_run_and_die(void) {
  pid_t child = fork();
  cr_assert_neq(child, -1);
  if (child == 0) {
    herd_runlog *db = NULL;
    herd_runlog_open(&db, db_path, HERD_RUNLOG_CREATE);
    herd_run_info info = {.name = "doomed", .git_dirty = -1};
    herd_run *run = NULL;
    herd_run_start(db, &info, &run);
    herd_run_log(run, "loss", 1, 1.0);
    herd_run_flush(run);
    raise(SIGKILL);
  }
  int status;
  waitpid(child, &status, 0);
  cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

Test(runlog, killed_process_is_crashed_after_gc) {
  start_run_and_die();
  char text[256];
  query_text("SELECT status FROM runs", text, sizeof text);
  cr_assert_str_eq(text, "running");
  herd_runlog *db = open_db();
  int marked = -1;
  cr_assert_eq(herd_runlog_gc(db, &marked), HERD_OK, "%s", herd_errmsg());
  cr_assert_eq(marked, 1);
  query_text("SELECT status || ' ' || (error LIKE '%stopped without finishing%') FROM runs", text,
             sizeof text);
  cr_assert_str_eq(text, "crashed 1");
  cr_assert_eq(query_int("SELECT count(*) FROM metrics"), 1, "its metrics stay");
  cr_assert_eq(herd_runlog_gc(db, &marked), HERD_OK);
  cr_assert_eq(marked, 0);
  herd_runlog_close(db);
}

Test(runlog, killed_process_is_crashed_at_next_start) {
  start_run_and_die();
  herd_runlog *db = open_db();
  herd_run *run = start_run(db, "next", NULL);
  char text[64];
  query_text("SELECT status FROM runs WHERE name = 'doomed'", text, sizeof text);
  cr_assert_str_eq(text, "crashed");
  query_text("SELECT status FROM runs WHERE name = 'next'", text, sizeof text);
  cr_assert_str_eq(text, "running", "gc never touches live runs");
  herd_run_free(run);
  herd_runlog_close(db);
}

Test(runlog, stale_heartbeat_on_another_host_is_crashed) {
  herd_runlog *db = open_db();
  herd_run *alive = start_run(db, "alive", NULL);
  herd_runlog_close(open_db());
  sqlite3 *conn;
  sqlite3_open(db_path, &conn);
  sqlite3_exec(conn,
               "INSERT INTO runs(uuid, name, started_at, heartbeat_at, pid, host) VALUES"
               " ('u1', 'far-stale', 0, 0, 1, 'elsewhere'),"
               " ('u2', 'far-fresh', 0, unixepoch('now'), 1, 'elsewhere')",
               NULL, NULL, NULL);
  sqlite3_close(conn);
  int marked = -1;
  cr_assert_eq(herd_runlog_gc(db, &marked), HERD_OK, "%s", herd_errmsg());
  cr_assert_eq(marked, 1);
  char text[128];
  query_text(
      "SELECT group_concat(name || ':' || status, ' ') FROM (SELECT * FROM runs ORDER BY id)", text,
      sizeof text);
  cr_assert_str_eq(text, "alive:running far-stale:crashed far-fresh:running");
  herd_run_free(alive);
  herd_runlog_close(db);
}

Test(runlog, heartbeat_thread_touches_open_runs) {
  herd_runlog *db = open_db();
  herd_run *run = start_run(db, "beating", NULL);
  sqlite3 *conn;
  sqlite3_open(db_path, &conn);
  sqlite3_exec(conn, "UPDATE runs SET heartbeat_at = 0", NULL, NULL, NULL);
  sqlite3_close(conn);
  herd_runlog_set_heartbeat(db, 0.05);
  usleep(400 * 1000);
  cr_assert_gt(query_int("SELECT heartbeat_at FROM runs"), 1000000);
  herd_run_finish(run, HERD_RUN_FINISHED, NULL);
  herd_run_free(run);
  herd_runlog_close(db);
}

// ---------------------------------------------------------------- concurrency

// Several processes creating one new database at once: the switch to WAL must wait for the
// others, not fail with "database is locked" (SQLite gives no busy-handler wait there).
Test(runlog, simultaneous_creators_of_a_new_database) {
  enum { OPENERS = 8, ROUNDS = 15 };
  for (int round = 0; round < ROUNDS; round++) {
    snprintf(db_path, sizeof db_path, "%s/new-%d.db", test_dir, round);
    int gate[2];
    cr_assert_eq(pipe(gate), 0);
    pid_t children[OPENERS];
    for (int i = 0; i < OPENERS; i++) {
      children[i] = fork();
      if (children[i] == 0) {
        char go;
        close(gate[1]);
        if (read(gate[0], &go, 1) != 0) _exit(20);  // released together when the pipe closes
        herd_runlog *db = NULL;
        int status = herd_runlog_open(&db, db_path, HERD_RUNLOG_CREATE);
        herd_runlog_close(db);
        _exit(status == HERD_OK ? 0 : 1);
      }
    }
    close(gate[0]);
    close(gate[1]);
    for (int i = 0; i < OPENERS; i++) {
      int status;
      waitpid(children[i], &status, 0);
      cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "round %d: opener %d failed", round,
                i);
    }
  }
}

enum { WRITERS = 4, POINTS_PER_WRITER = 20000 };

static void write_points(int writer) {
  herd_runlog *db = NULL;
  if (herd_runlog_open(&db, db_path, HERD_RUNLOG_CREATE) != HERD_OK) _exit(10);
  char name[32];
  snprintf(name, sizeof name, "writer-%d", writer);
  herd_run_info info = {.name = name, .git_dirty = -1};
  herd_run *run = NULL;
  if (herd_run_start(db, &info, &run) != HERD_OK) _exit(11);
  for (int step = 0; step < POINTS_PER_WRITER; step++)
    if (herd_run_log(run, step % 2 ? "loss" : "reward", step, step * 0.5) != HERD_OK) _exit(12);
  if (herd_run_finish(run, HERD_RUN_FINISHED, NULL) != HERD_OK) _exit(13);
  herd_run_free(run);
  herd_runlog_close(db);
  _exit(0);
}

Test(runlog, four_writers_lose_no_points) {
  herd_runlog_close(open_db());  // create the schema once; the writers race on everything else
  pid_t children[WRITERS];
  for (int i = 0; i < WRITERS; i++) {
    children[i] = fork();
    cr_assert_neq(children[i], -1);
    if (children[i] == 0) write_points(i);
  }
  for (int i = 0; i < WRITERS; i++) {
    int status;
    waitpid(children[i], &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer %d exited with %d", i,
              WEXITSTATUS(status));
  }
  cr_assert_eq(query_int("SELECT count(*) FROM metrics"), WRITERS * POINTS_PER_WRITER);
  cr_assert_eq(query_int("SELECT count(*) FROM runs WHERE status = 'finished'"), WRITERS);
  cr_assert_eq(query_int("SELECT count(*) FROM (SELECT run_id FROM metrics GROUP BY run_id"
                         " HAVING count(*) = 20000 AND count(DISTINCT step) = 20000)"),
               WRITERS);
}
