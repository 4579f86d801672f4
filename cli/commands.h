/*
 * The subcommands of the `catena` command. Each takes argv starting at the subcommand
 * name and returns the process exit status: 0 success, 1 failure, 2 usage error.
 */
#ifndef CTN_COMMANDS_H
#define CTN_COMMANDS_H

int ctn_cmd_inspect(int argc, char **argv);
int ctn_cmd_tokenize(int argc, char **argv);
int ctn_cmd_detokenize(int argc, char **argv);
int ctn_cmd_convert(int argc, char **argv);
int ctn_cmd_quantize(int argc, char **argv);
int ctn_cmd_generate(int argc, char **argv);
int ctn_cmd_bench(int argc, char **argv);
int ctn_cmd_batch(int argc, char **argv);
int ctn_cmd_perplexity(int argc, char **argv);
int ctn_cmd_run(int argc, char **argv);
int ctn_cmd_repl(int argc, char **argv);
int ctn_cmd_lora(int argc, char **argv);
int ctn_cmd_ingest(int argc, char **argv);
int ctn_cmd_kb(int argc, char **argv);
int ctn_cmd_search(int argc, char **argv);
int ctn_cmd_serve(int argc, char **argv);

#endif
