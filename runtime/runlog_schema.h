// defines: herd_runlog_migrations
#ifndef HERD_RUNLOG_SCHEMA_H
#define HERD_RUNLOG_SCHEMA_H

#include "runlog.h"

// Entry N-1 brings a database from schema version N-1 (PRAGMA user_version) to N.
extern const char *const herd_runlog_migrations[HERD_RUNLOG_SCHEMA_VERSION];

#endif
