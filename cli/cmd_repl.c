/*
 * catena repl (also bare `catena` on a terminal): an interactive Lua 5.4 session with the
 * catena module loaded as the global `catena`.
 *
 *   - line editing and history (libedit; ~/.catena_history);
 *   - a chunk that is not complete yet ("<eof>" in the syntax error) continues on the next
 *     line, as lua5.4 does;
 *   - `=expr` (or an expression alone) prints its values: tables and chain values as
 *     JSON, runnables as their graph; r:stream(x) prints chunks as they arrive;
 *   - Ctrl-C while a chain runs cancels it and keeps the session;
 *   - :help, :trace (print each run's trace tree: on/off), :graph EXPR, :quit.
 */
#include <editline/readline.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "l_catena.h"

static const char *help_text =
    "catena repl: Lua 5.4 with the chain library in the global 'catena'.\n"
    "  expr or =expr     print the values (tables as JSON, runnables as graphs)\n"
    "  r:stream(x)       printed chunk by chunk as the chain makes them\n"
    "  Ctrl-C            cancel the running chain (the session stays)\n"
    "  :trace            print each run's trace tree (on/off)\n"
    "  :graph EXPR       draw the runnable EXPR\n"
    "  :help, :quit      this text; leave (Ctrl-D too)\n";


/* Prints the value at idx: runnables drawn, chain values as JSON, others with tostring. */
static void show(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    if (luaL_testudata(L, idx, CTN_L_RUNNABLE)) {
        lua_getfield(L, idx, "describe");
        lua_pushvalue(L, idx);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
            fputs(lua_tostring(L, -1), stdout);
            lua_pop(L, 1);
            return;
        }
        lua_pop(L, 1);
    }
    if (lua_type(L, idx) == LUA_TTABLE && luaL_getmetafield(L, idx, "__tostring") == LUA_TNIL) {
        char err[256];
        ctn_val *v = ctn_l_to_val(L, idx, "value", err, sizeof err);
        if (v != NULL) {
            char *j = ctn_val_to_json(v, 2);
            ctn_val_unref(v);
            if (j != NULL) {
                printf("%s\n", j);
                free(j);
                return;
            }
        }
    } else if (lua_type(L, idx) == LUA_TTABLE) {
        lua_pop(L, 1); /* the __tostring luaL_getmetafield pushed */
    }
    if (lua_type(L, idx) == LUA_TSTRING) {
        /* Strings as Lua literals, so "1" and 1 differ. */
        lua_getglobal(L, "string");
        lua_getfield(L, -1, "format");
        lua_pushstring(L, "%q");
        lua_pushvalue(L, idx);
        lua_call(L, 2, 1);
        printf("%s\n", lua_tostring(L, -1));
        lua_pop(L, 2);
        return;
    }
    printf("%s\n", luaL_tolstring(L, idx, NULL));
    lua_pop(L, 1);
}

/* :graph EXPR: draws the runnable EXPR evaluates to, or says what :graph expects and what
 * EXPR gave instead (an error of its own, or a value of another type). */
static void graph_command(lua_State *L, const char *expr) {
    static const char *const want = ":graph EXPR draws a runnable, for example :graph chain";
    while (*expr == ' ' || *expr == '\t')
        expr++;
    if (*expr == '\0') {
        fprintf(stderr, "%s\n", want);
        return;
    }
    const int base = lua_gettop(L);
    lua_pushfstring(L, "return %s", expr);
    const char *code = lua_tostring(L, -1);
    if (luaL_loadbuffer(L, code, strlen(code), "=graph") != LUA_OK ||
        lua_pcall(L, 0, 1, 0) != LUA_OK) {
        fprintf(stderr, ":graph: %s\n", luaL_tolstring(L, -1, NULL));
    } else if (!luaL_testudata(L, -1, CTN_L_RUNNABLE)) {
        if (lua_isnil(L, -1))
            fprintf(stderr, "%s; '%s' is nil (not defined?)\n", want, expr);
        else
            fprintf(stderr, "%s; '%s' is a %s\n", want, expr, luaL_typename(L, -1));
    } else {
        show(L, -1);
    }
    lua_settop(L, base);
}


/* r:stream(x) returns an iterator and a closing value: print chunks as they come. */
static int print_stream(lua_State *L) {
    /* upvalue-free: args are iterator, state, control, closer */
    lua_settop(L, 4);
    for (;;) {
        lua_pushvalue(L, 1);
        lua_pushvalue(L, 2);
        lua_pushvalue(L, 3);
        lua_call(L, 2, 1);
        if (lua_isnil(L, -1)) break;
        if (lua_type(L, -1) == LUA_TSTRING) {
            fputs(lua_tostring(L, -1), stdout);
        } else {
            show(L, -1);
        }
        fflush(stdout);
        lua_pop(L, 1);
    }
    printf("\n");
    return 0;
}

/* Runs a complete chunk; prints what an expression gives. */
static void run_chunk(lua_State *L, int base) {
    const int n = lua_gettop(L) - base; /* the function */
    (void)n;
    lua_pushcfunction(L, ctn_l_traceback);
    lua_insert(L, base + 1);
    const int st = lua_pcall(L, 0, LUA_MULTRET, base + 1);
    if (st != LUA_OK) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        lua_settop(L, base);
        ctn_l_take_interrupt(L);
        return;
    }
    const int nres = lua_gettop(L) - base - 1;
    /* A stream: iterator function, nil, nil, closing userdata. */
    if (nres == 4 && lua_isfunction(L, base + 2) && lua_isuserdata(L, base + 5)) {
        lua_pushcfunction(L, print_stream);
        for (int i = 0; i < 4; i++)
            lua_pushvalue(L, base + 2 + i);
        if (lua_pcall(L, 4, 0, base + 1) != LUA_OK) {
            fprintf(stderr, "\n%s\n", lua_tostring(L, -1));
            lua_pop(L, 1);
        }
        lua_settop(L, base);
        return;
    }
    for (int i = 0; i < nres; i++)
        show(L, base + 2 + i);
    lua_settop(L, base);
}

/* Whether a load error means the chunk is only incomplete. */
static int incomplete(lua_State *L, int st) {
    if (st != LUA_ERRSYNTAX) return 0;
    size_t len = 0;
    const char *msg = lua_tolstring(L, -1, &len);
    return len >= 5 && strcmp(msg + len - 5, "<eof>") == 0;
}

int ctn_cmd_repl(int argc, char **argv) {
    if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        printf("usage: catena repl\n%s", help_text);
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "catena repl: takes no arguments (catena run SCRIPT.lua runs a file)\n");
        return 2;
    }
    lua_State *L = luaL_newstate();
    if (L == NULL) return 1;
    luaL_openlibs(L);
    luaL_requiref(L, "catena", luaopen_catena, 1);
    lua_pop(L, 1);
    ctn_l_watch_interrupt(L);
    const int tty = isatty(0);
    char hist[1024] = "";
    const char *home = getenv("HOME");
    if (home != NULL && tty) {
        snprintf(hist, sizeof hist, "%s/.catena_history", home);
        using_history();
        read_history(hist);
    }
    if (tty) printf("catena %s (Lua 5.4). :help for help, Ctrl-D to leave.\n", CTN_VERSION);
    int trace = 0;
    char *chunk = NULL;
    size_t clen = 0;
    for (;;) {
        char *line = NULL;
        if (tty) {
            line = readline(chunk ? "   ...> " : "catena> ");
        } else {
            size_t cap = 0;
            ssize_t got = getline(&line, &cap, stdin);
            if (got < 0) {
                free(line);
                line = NULL;
            } else if (got > 0 && line[got - 1] == '\n') {
                line[got - 1] = 0;
            }
        }
        if (line == NULL) break;
        if (tty && *line) add_history(line);
        if (chunk == NULL && line[0] == ':') {
            if (!strcmp(line, ":quit") || !strcmp(line, ":q")) {
                free(line);
                break;
            } else if (!strcmp(line, ":help")) {
                fputs(help_text, stdout);
            } else if (!strcmp(line, ":trace")) {
                trace = !trace;
                ctn_l_set_print_trace(L, trace);
                printf("trace trees %s\n", trace ? "on" : "off");
            } else if (!strcmp(line, ":graph") || !strncmp(line, ":graph ", 7)) {
                graph_command(L, line + 6);
            } else {
                fprintf(stderr, "unknown command %s (:help)\n", line);
            }
            free(line);
            continue;
        }
        /* Append the line to the pending chunk. */
        const size_t ll = strlen(line);
        char *nc = realloc(chunk, clen + ll + 2);
        if (nc == NULL) {
            free(line);
            break;
        }
        chunk = nc;
        if (clen > 0) chunk[clen++] = '\n';
        memcpy(chunk + clen, line, ll + 1);
        clen += ll;
        free(line);
        const int base = lua_gettop(L);
        const char *src = chunk[0] == '=' ? chunk + 1 : chunk;
        /* An expression first (its values are printed), then a statement. */
        char *expr = malloc(strlen(src) + 8);
        sprintf(expr, "return %s", src);
        int st = luaL_loadbuffer(L, expr, strlen(expr), "=stdin");
        free(expr);
        if (st != LUA_OK) {
            lua_pop(L, 1);
            st = luaL_loadbuffer(L, src, strlen(src), "=stdin");
        }
        if (incomplete(L, st)) {
            lua_pop(L, 1);
            continue; /* read more lines */
        }
        if (st != LUA_OK) {
            fprintf(stderr, "%s\n", lua_tostring(L, -1));
            lua_settop(L, base);
        } else {
            run_chunk(L, base);
        }
        free(chunk);
        chunk = NULL;
        clen = 0;
        fflush(stdout);
    }
    free(chunk);
    if (tty && hist[0]) write_history(hist);
    if (tty) printf("\n");
    lua_close(L);
    return 0;
}
