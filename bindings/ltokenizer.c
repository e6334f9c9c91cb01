// The `herd.tokenizer_core` module: tokenizers as Lua userdata (lua/herd/tokenizer.lua adds
// options tables and chat messages by role name). Token ids are the vocabulary's ids (0-based,
// as in tokenizer.json): they are data, not Lua indices.
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "host.h"
#include "tokenizer.h"

#define TOKENIZER_TYPE "herd.Tokenizer"

typedef struct tokenizer_box {
  herd_tokenizer *tok;
} tokenizer_box;

static herd_tokenizer *check_tokenizer(lua_State *L) {
  tokenizer_box *box = luaL_checkudata(L, 1, TOKENIZER_TYPE);
  if (!box->tok) luaL_error(L, "tokenizer is closed");
  return box->tok;
}

static int tokenizer_gc(lua_State *L) {
  tokenizer_box *box = luaL_checkudata(L, 1, TOKENIZER_TYPE);
  herd_tokenizer_free(box->tok);
  box->tok = NULL;
  return 0;
}

static tokenizer_box *push_box(lua_State *L) {
  tokenizer_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->tok = NULL;
  luaL_setmetatable(L, TOKENIZER_TYPE);
  return box;
}

// A malloc'd buffer owned by a userdata on the stack (freed by the collector on any error).
typedef struct buffer_box {
  void *data;
} buffer_box;

static int buffer_gc(lua_State *L) {
  buffer_box *box = lua_touserdata(L, 1);
  free(box->data);
  box->data = NULL;
  return 0;
}

static buffer_box *push_buffer(lua_State *L) {
  buffer_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->data = NULL;
  if (luaL_newmetatable(L, "herd.TokenizerBuffer")) {
    lua_pushcfunction(L, buffer_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return box;
}

static int core_load(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  tokenizer_box *box = push_box(L);
  HERD_LUA_CHECK(L, herd_tokenizer_load(&box->tok, path));
  return 1;
}

// core.train(texts, vocab_size, min_frequency)
static int core_train(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int vocab_size = (int)luaL_checkinteger(L, 2);
  int min_frequency = (int)luaL_optinteger(L, 3, 2);
  size_t n = (size_t)luaL_len(L, 1);
  const char **texts = lua_newuserdatauv(L, sizeof *texts * (n ? n : 1), 0);
  for (size_t i = 0; i < n; i++) {
    lua_geti(L, 1, (lua_Integer)i + 1);
    texts[i] = luaL_checkstring(L, -1);  // the corpus table keeps it alive
    lua_pop(L, 1);
  }
  tokenizer_box *box = push_box(L);
  HERD_LUA_CHECK(L, herd_tokenizer_train(&box->tok, texts, n, vocab_size, min_frequency));
  return 1;
}

// tok:encode(text, flags) -> {ids...}
static int tokenizer_encode(lua_State *L) {
  herd_tokenizer *tok = check_tokenizer(L);
  size_t len;
  const char *text = luaL_checklstring(L, 2, &len);
  int flags = (int)luaL_optinteger(L, 3, HERD_TOK_BOS);
  buffer_box *buffer = push_buffer(L);
  int32_t *ids = NULL;
  size_t n = 0;
  HERD_LUA_CHECK(L, herd_tokenizer_encode(tok, text, len, flags, &ids, &n));
  buffer->data = ids;
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushinteger(L, ids[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

static int32_t *check_ids(lua_State *L, int index, size_t *n) {
  luaL_checktype(L, index, LUA_TTABLE);
  *n = (size_t)luaL_len(L, index);
  buffer_box *buffer = push_buffer(L);
  int32_t *ids = malloc(sizeof *ids * (*n ? *n : 1));
  if (!ids) luaL_error(L, "out of memory");
  buffer->data = ids;
  for (size_t i = 0; i < *n; i++) {
    lua_geti(L, index, (lua_Integer)i + 1);
    int ok;
    ids[i] = (int32_t)lua_tointegerx(L, -1, &ok);
    if (!ok) luaL_error(L, "ids[%d] must be an integer", (int)i + 1);
    lua_pop(L, 1);
  }
  return ids;
}

// tok:decode(ids, flags) -> text
static int tokenizer_decode(lua_State *L) {
  herd_tokenizer *tok = check_tokenizer(L);
  size_t n;
  int32_t *ids = check_ids(L, 2, &n);
  int flags = (int)luaL_optinteger(L, 3, 0);
  buffer_box *buffer = push_buffer(L);
  char *text = NULL;
  size_t len = 0;
  HERD_LUA_CHECK(L, herd_tokenizer_decode(tok, ids, n, flags, &text, &len));
  buffer->data = text;
  lua_pushlstring(L, text, len);
  return 1;
}

static int tokenizer_save(lua_State *L) {
  HERD_LUA_CHECK(L, herd_tokenizer_save(check_tokenizer(L), luaL_checkstring(L, 2)));
  return 0;
}

static int tokenizer_vocab_size(lua_State *L) {
  lua_pushinteger(L, herd_tokenizer_vocab_size(check_tokenizer(L)));
  return 1;
}

static int tokenizer_token(lua_State *L) {
  const char *piece = herd_tokenizer_token(check_tokenizer(L), (int)luaL_checkinteger(L, 2));
  if (piece)
    lua_pushstring(L, piece);
  else
    lua_pushnil(L);
  return 1;
}

static int tokenizer_id(lua_State *L) {
  int id = herd_tokenizer_token_id(check_tokenizer(L), luaL_checkstring(L, 2));
  if (id >= 0)
    lua_pushinteger(L, id);
  else
    lua_pushnil(L);
  return 1;
}

static int tokenizer_special(lua_State *L) {
  herd_tokenizer *tok = check_tokenizer(L);
  lua_pushinteger(L, herd_tokenizer_bos_id(tok));
  lua_pushinteger(L, herd_tokenizer_eos_id(tok));
  return 2;
}

typedef struct chat_box {
  herd_chat_tokens chat;
} chat_box;

static int chat_gc(lua_State *L) {
  chat_box *box = lua_touserdata(L, 1);
  herd_chat_tokens_free(&box->chat);
  memset(&box->chat, 0, sizeof box->chat);
  return 0;
}

// tok:_chat({{role = 1..3, content = "..."}, ...}) -> ids, roles (numbers), message indices
// (1-based)
static int tokenizer_chat(lua_State *L) {
  herd_tokenizer *tok = check_tokenizer(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  size_t n = (size_t)luaL_len(L, 2);
  herd_chat_msg *msgs = lua_newuserdatauv(L, sizeof *msgs * (n ? n : 1), 0);
  for (size_t i = 0; i < n; i++) {
    lua_geti(L, 2, (lua_Integer)i + 1);
    luaL_checktype(L, -1, LUA_TTABLE);
    lua_getfield(L, -1, "role");
    msgs[i].role = (int)luaL_checkinteger(L, -1);
    lua_getfield(L, -2, "content");
    msgs[i].content = luaL_checkstring(L, -1);  // kept alive by the message table
    lua_pop(L, 3);
  }
  chat_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  memset(&box->chat, 0, sizeof box->chat);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, chat_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  HERD_LUA_CHECK(L, herd_tokenizer_chat(tok, msgs, n, &box->chat));
  const herd_chat_tokens *chat = &box->chat;
  lua_createtable(L, (int)chat->n, 0);
  lua_createtable(L, (int)chat->n, 0);
  lua_createtable(L, (int)chat->n, 0);
  for (size_t i = 0; i < chat->n; i++) {
    lua_pushinteger(L, chat->ids[i]);
    lua_rawseti(L, -4, (lua_Integer)i + 1);
    lua_pushinteger(L, chat->roles[i]);
    lua_rawseti(L, -3, (lua_Integer)i + 1);
    lua_pushinteger(L, chat->msg[i] + 1);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 3;
}

int luaopen_herd_tokenizer_core(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"_encode", tokenizer_encode},   {"_decode", tokenizer_decode},
      {"save", tokenizer_save},        {"vocab_size", tokenizer_vocab_size},
      {"token", tokenizer_token},      {"id", tokenizer_id},
      {"_special", tokenizer_special}, {"_chat", tokenizer_chat},
      {"close", tokenizer_gc},         {NULL, NULL}};
  static const luaL_Reg functions[] = {{"load", core_load}, {"train", core_train}, {NULL, NULL}};
  herd_lua_newclass(L, TOKENIZER_TYPE, tokenizer_gc, methods, functions);
  lua_pushinteger(L, HERD_TOK_BOS);
  lua_setfield(L, -2, "BOS");
  lua_pushinteger(L, HERD_TOK_EOS);
  lua_setfield(L, -2, "EOS");
  lua_pushinteger(L, HERD_TOK_NO_SPECIAL);
  lua_setfield(L, -2, "NO_SPECIAL");
  lua_pushinteger(L, HERD_TOK_SKIP_SPECIAL);
  lua_setfield(L, -2, "SKIP_SPECIAL");
  return 1;
}
