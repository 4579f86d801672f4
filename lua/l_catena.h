/*
 * The catena Lua module (lua/l_*.c): what its files share. The module is linked into the
 * catena command (catena run, repl) and built as catena.so for a stock lua5.4
 * (require "catena").
 *
 * Values: Lua values convert to chain values (chains/value.h) and back exactly:
 *   nil / catena.null <-> null (inside tables catena.null stands for null, so arrays keep
 *   their length), booleans, integers <-> integers, floats <-> doubles, strings <-> byte
 *   strings, sequences 1..n <-> arrays (an empty table is an object unless made with
 *   catena.array{}), tables with string keys <-> objects, catena.document{...} <->
 *   documents.
 */
#ifndef CTN_L_CATENA_H
#define CTN_L_CATENA_H

#include <lauxlib.h>
#include <lua.h>

#include "chain.h"
#include "lm.h"
#include "value.h"

/* Registry / metatable names. */
#define CTN_L_RUNNABLE "catena.runnable"
#define CTN_L_DOCUMENT "catena.document"
#define CTN_L_ARRAY    "catena.array"
#define CTN_L_ERROR    "catena.error"

/* Pushes v as a Lua value (top: nil for null when top is set, catena.null inside). */
void ctn_l_push_val(lua_State *L, const ctn_val *v, int top);
/* The value at idx as a chain value; NULL with a message naming the place in err (e.g.
 * "input.items[3]: a function cannot be a chain value"). where names the value. */
ctn_val *ctn_l_to_val(lua_State *L, int idx, const char *where, char *err, size_t errcap);
/* Pushes a catena error object {code, kind, message, path} (path NULL: ""); tostring gives
 * "path: message". */
void ctn_l_push_err(lua_State *L, int code, const char *message, const char *path);
/* A message handler for lua_pcall: the error as text (a catena error object via its
 * __tostring), the frames of the lambda it was raised in when it carries them (its
 * traceback field), then the caller's stack traceback; a cancellation is its one line. */
int ctn_l_traceback(lua_State *L);
/* The same with the fields of detail (an object, or NULL) added: cause, traceback. */
void ctn_l_push_err_detail(lua_State *L, int code, const char *message, const char *path,
                           const ctn_val *detail);
/*
 * Runs fn(L, ud, err, errcap) under lua_pcall on L, the main thread: for C that the loop
 * calls (executor callbacks, libuv callbacks), where a Lua error must not longjmp through
 * the executor's and libuv's frames. Returns what fn returns (0 or a CTN_E* code, with its
 * reason in err), or for an error raised inside it CTN_ENOMEM (a memory error) or
 * CTN_ECHAIN (any other), the error's text in err. The stack is as it was either way.
 */
typedef int (*ctn_l_protected_fn)(lua_State *L, void *ud, char *err, size_t errcap);
int ctn_l_protect(lua_State *L, ctn_l_protected_fn fn, void *ud, char *err, size_t errcap);
/* Pushes catena.null (a light userdata). */
void ctn_l_push_null(lua_State *L);
/*
 * luaL_error, with the position of the first caller outside catena's own Lua glue (chunks
 * named "=catena...", such as catena.kb's methods), so a bad option passed to kb:ingest
 * points at the user's line, not the glue's. Never returns.
 */
int ctn_l_error(lua_State *L, const char *fmt, ...);

/*
 * Raises "WHAT: unknown option 'ctxx' (did you mean 'ctx'?)" (or with the list of options
 * when none is near) for the first key of the table at idx that is not one of the n names
 * of allowed, and "WHAT: option names are strings, not a number" for a key that is not a
 * string. Reads the table raw (no metamethods).
 */
void ctn_l_check_options(lua_State *L, int idx, const char *what, const char *const *allowed,
                         size_t n);

int luaopen_catena(lua_State *L);
/* Adds prompt, model and parser to the module table on the top of the stack
 * (l_components.c). */
void ctn_l_open_components(lua_State *L);
/* Adds loader, splitter and kb to the module table on the top of the stack (l_rag.c). */
void ctn_l_open_rag(lua_State *L);
/* catena.remote and catena.remote_embeddings (l_remote.c). */
void ctn_l_open_remote(lua_State *L);
/* catena.history, r:with_history, catena.retriever.multi_query and .history_aware
 * (l_history.c). */
void ctn_l_open_history(lua_State *L);
/* Runs the Lua glue src (n bytes, chunk name name, "=catena...") of a part of the module:
 * the chunk gets (prims: a table of prims' functions, the module (on top of the stack at the
 * call), the runnables' method table) as its arguments. Raises on a load error. */
void ctn_l_run_glue(lua_State *L, const char *src, size_t n, const char *name,
                    const luaL_Reg *prims);
/* runnable:with_structured_output, runnable:bind_tools, catena.tool and catena.tool_loop
 * (lua/l_tools.c). */
void ctn_l_open_tools(lua_State *L);
/* The JSON text of the schema at idx: a string as it is, a table as JSON with its objects'
 * keys in byte order (a Lua table's keys have no order of their own). malloc'd; raises
 * naming where on anything else. */
char *ctn_l_schema_text(lua_State *L, int idx, const char *where);
/* The libuv loop the module of L runs its chains on (NULL before luaopen_catena). A host
 * that runs that loop itself (catena serve) may start chains of L on it with ctn_run_start. */
uv_loop_t *ctn_l_loop(lua_State *L);
/* A host that runs the state's loop itself (the C API's loop thread) calls enter before its
 * uv_run and leave after it, so a wait in plain code (a chain file's main chunk calling
 * r:invoke) raises "cannot wait here" instead of running the loop inside the loop. */
void ctn_l_loop_enter(lua_State *L);
void ctn_l_loop_leave(lua_State *L);
/* A new Lua state with the standard libraries and the catena module loaded (and preloaded,
 * so require "catena" finds it), as catena run gives scripts; NULL when memory runs out. */
lua_State *ctn_l_new_state(void);
/*
 * Runs the chain file at path (its main chunk gets the nargs strings of args as ...) and
 * takes the runnable it returns: 0 and *out (one reference, the caller's), or CTN_ENOENT
 * (no such file), CTN_ECHAIN (a syntax or runtime error: Lua's message, which names the
 * file and line, with a traceback), CTN_ETYPE (it returned no runnable), CTN_ENOMEM, with
 * the reason in err. On the loop's thread; the stack is as it was.
 */
int ctn_l_load_chain(lua_State *L, const char *path, const char *const *args, int nargs,
                     ctn_node **out, char *err, size_t errcap);
/* Opens (or finds) the model at path on the state's loop (stdlib/lm.h). */
int ctn_l_open_model(lua_State *L, const char *path, const ctn_lm_params *p, ctn_lm **out,
                     char *err, size_t errcap);
/* Prints the trace tree of every top-level run of L to stderr when on (catena run --trace);
 * the module must be loaded. */
void ctn_l_set_print_trace(lua_State *L, int on);
/* Ctrl-C (SIGINT) while plain code waits for a chain cancels the chain (it ends with
 * "cancelled") instead of killing the process; for the REPL. 0 or -1. */
int ctn_l_watch_interrupt(lua_State *L);
/* Whether Ctrl-C came since the last call (and forgets it). */
int ctn_l_take_interrupt(lua_State *L);
/*
 * catena run's Ctrl-C: SIGINT cancels the run being waited for (the script sees a
 * cancellation error, code CTN_ECANCELED) or, in plain Lua code, raises one ("interrupted
 * (Ctrl-C)"); a second Ctrl-C before the first is taken ends the process. 0 or -1.
 * ctn_l_interrupts: how many came.
 */
int ctn_l_catch_interrupt(lua_State *L);
int ctn_l_interrupts(void);

#endif
