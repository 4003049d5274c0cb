/* libFuzzer's entry for programs that keep their own main (SwiftPM renames an
   executable's main, so libFuzzer's cannot be used). Provided by the fuzzer
   runtime when linking with -sanitize=fuzzer. */
#ifndef FUZZ_DRIVER_H
#define FUZZ_DRIVER_H
#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
#endif
