/*
 * catena run SCRIPT.lua [ARGS...]: runs a Lua 5.4 chain script with the catena module
 * preloaded (require "catena") and the script's arguments in arg (arg[0] the script, as
 * lua5.4 does). --trace prints the trace tree of every top-level run to stderr.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "l_catena.h"


static int usage(FILE *f) {
    fprintf(f, "usage: catena run [--trace] SCRIPT.lua [ARGS...]\n"
               "  Runs a Lua chain script; require \"catena\" gives the chain library.\n"
               "  SCRIPT - reads the script from stdin.\n"
               "  --trace  print each run's trace tree (node, time, output, tokens, error) to "
               "stderr\n");
    return f == stderr ? 2 : 0;
}

int ctn_cmd_run(int argc, char **argv) {
    if (argc < 2) return usage(stderr);
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) return usage(stdout);
    int trace = 0;
    if (!strcmp(argv[1], "--trace")) {
        trace = 1;
        argc--, argv++;
        if (argc < 2) return usage(stderr);
    }
    const char *script = argv[1];
    lua_State *L = ctn_l_new_state();
    if (L == NULL) {
        fprintf(stderr, "catena run: out of memory\n");
        return 1;
    }
    if (trace) ctn_l_set_print_trace(L, 1);
    if (ctn_l_catch_interrupt(L) < 0) {
        fprintf(stderr, "catena run: cannot watch for Ctrl-C\n");
        lua_close(L);
        return 1;
    }
    /* arg: the script at 0, its arguments from 1, the command before it at -1. */
    lua_createtable(L, argc - 2, 2);
    lua_pushstring(L, "catena run");
    lua_rawseti(L, -2, -1);
    for (int i = 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    lua_setglobal(L, "arg");
    lua_pushcfunction(L, ctn_l_traceback);
    const int st = luaL_loadfile(L, strcmp(script, "-") == 0 ? NULL : script);
    int rc = 0;
    if (st != LUA_OK) {
        fprintf(stderr, "catena run: %s\n", lua_tostring(L, -1));
        rc = 1;
    } else {
        for (int i = 2; i < argc; i++)
            lua_pushstring(L, argv[i]);
        if (lua_pcall(L, argc - 2, 0, -(argc - 2) - 2) != LUA_OK) {
            fprintf(stderr, "catena run: %s\n", lua_tostring(L, -1));
            rc = 1;
        }
    }
    lua_close(L);
    /* Interrupted: 130 (128 + SIGINT) as a shell reports a process Ctrl-C ended, once the
     * chains are cancelled and the script has had its say. */
    return ctn_l_interrupts() > 0 ? 130 : rc;
}
