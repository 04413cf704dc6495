//! The register save and restore shared by the two call-based entries that
//! build a [`TrapFrame`](crate::TrapFrame) on the stack without a trap: the
//! kretprobe trampoline (`trampoline.rs`) and the optprobe common entry
//! (`detour.rs`). Each is a string for `global_asm!`, one instruction a line.
//!
//! Frame offsets (as in `trap.rs`): fxsave 0..512 (xmm0 at 160, xmm1 at 176),
//! r15 512, r14 520, r13 528, r12 536, r11 544, r10 552, r9 560, r8 568,
//! rbp 576, rdi 584, rsi 592, rdx 600, rcx 608, rbx 616, rax 624, vector 632,
//! error 640, rip 648, cs 656, rflags 664, rsp 672, ss 680; 688 bytes.
//!
//! Both expect the same frame record: `[rbp]` the context's rbp, `[rbp-8]`
//! its flags (`pushfq` right after `movq %rsp, %rbp`), `[rbp+8]` the return
//! address slot, and the context's rsp at `rbp + 16`.

/// Aligns rsp, reserves the frame and fills it: the general registers (rbp
/// from `[rbp]`), vector 3, error 0, rip 0 (the caller fills what it knows),
/// cs, rflags from `[rbp-8]`, rsp = rbp + 16, ss. Clobbers rax (saved first).
macro_rules! frame_save_asm {
    () => {
        concat!(
            "andq $-16, %rsp\n",
            "subq $688, %rsp\n",
            "movq %rax, 624(%rsp)\n",
            "movq %rbx, 616(%rsp)\n",
            "movq %rcx, 608(%rsp)\n",
            "movq %rdx, 600(%rsp)\n",
            "movq %rsi, 592(%rsp)\n",
            "movq %rdi, 584(%rsp)\n",
            "movq (%rbp), %rax\n",
            "movq %rax, 576(%rsp)\n",
            "movq %r8, 568(%rsp)\n",
            "movq %r9, 560(%rsp)\n",
            "movq %r10, 552(%rsp)\n",
            "movq %r11, 544(%rsp)\n",
            "movq %r12, 536(%rsp)\n",
            "movq %r13, 528(%rsp)\n",
            "movq %r14, 520(%rsp)\n",
            "movq %r15, 512(%rsp)\n",
            "movq $3, 632(%rsp)\n",
            "movq $0, 640(%rsp)\n",
            "movq $0, 648(%rsp)\n",
            "movl %cs, %eax\n",
            "movq %rax, 656(%rsp)\n",
            "movq -8(%rbp), %rax\n",
            "movq %rax, 664(%rsp)\n",
            "leaq 16(%rbp), %rax\n",
            "movq %rax, 672(%rsp)\n",
            "movl %ss, %eax\n",
            "movq %rax, 680(%rsp)\n",
        )
    };
}

/// Writes the frame's rflags and rbp back into the frame record, reloads the
/// general registers from the frame, drops it and returns through the
/// record (`popfq`, `popq %rbp`, `ret`). The caller has put the address to
/// return to into `[rbp+8]` first.
macro_rules! frame_restore_asm {
    () => {
        concat!(
            "movq 664(%rsp), %rax\n",
            "movq %rax, -8(%rbp)\n",
            "movq 576(%rsp), %rax\n",
            "movq %rax, (%rbp)\n",
            "movq 512(%rsp), %r15\n",
            "movq 520(%rsp), %r14\n",
            "movq 528(%rsp), %r13\n",
            "movq 536(%rsp), %r12\n",
            "movq 544(%rsp), %r11\n",
            "movq 552(%rsp), %r10\n",
            "movq 560(%rsp), %r9\n",
            "movq 568(%rsp), %r8\n",
            "movq 584(%rsp), %rdi\n",
            "movq 592(%rsp), %rsi\n",
            "movq 600(%rsp), %rdx\n",
            "movq 608(%rsp), %rcx\n",
            "movq 616(%rsp), %rbx\n",
            "movq 624(%rsp), %rax\n",
            "leaq -8(%rbp), %rsp\n",
            "popfq\n",
            "popq %rbp\n",
            ".cfi_def_cfa %rsp, 8\n",
            "ret\n",
        )
    };
}
