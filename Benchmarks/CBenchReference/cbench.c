int privsep_bench_placeholder(void){return 0;}
