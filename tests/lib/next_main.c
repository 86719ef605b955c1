#include <stdio.h>
int next_marker(void);
int main(void) { printf("next %d\n", next_marker()); return 0; }
