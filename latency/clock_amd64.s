#include "textflag.h"

// func readTSC() uint64
TEXT ·readTSC(SB), NOSPLIT|NOFRAME, $0-8
	RDTSCP
	SHLQ $32, DX
	ORQ  DX, AX
	MOVQ AX, ret+0(FP)
	RET

// func cpuidLeaf(leaf, sub uint32) (a, b, c, d uint32)
TEXT ·cpuidLeaf(SB), NOSPLIT|NOFRAME, $0-24
	MOVL leaf+0(FP), AX
	MOVL sub+4(FP), CX
	CPUID
	MOVL AX, a+8(FP)
	MOVL BX, b+12(FP)
	MOVL CX, c+16(FP)
	MOVL DX, d+20(FP)
	RET
