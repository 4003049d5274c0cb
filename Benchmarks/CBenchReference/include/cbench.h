int privsep_bench_placeholder(void);
