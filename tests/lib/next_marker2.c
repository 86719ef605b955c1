int marker(void) { return 2; }
