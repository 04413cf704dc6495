//! What the linux-gnu `compiler_builtins` does not export for a freestanding
//! kernel link: memcpy, memmove, memset, memcmp, bcmp, and the unwinding
//! symbols (never called with panic = abort). [`freestanding_intrinsics!`]
//! defines them in the kernel crate (a definition in this crate would also
//! reach the host programs that link `arch`, in place of libc's).

/// Defines `memcpy`, `memmove`, `memset`, `memcmp`, `bcmp`,
/// `rust_eh_personality` and `_Unwind_Resume` in the calling crate (which
/// must depend on `noprobe`: they are unprobeable, handlers use them).
/// Simple byte loops; `rep movsb`/`stosb` where that is trivially right.
#[macro_export]
macro_rules! freestanding_intrinsics {
    () => {
        /// # Safety
        /// `dest` and `src` valid for `n` bytes and not overlapping.
        #[unsafe(no_mangle)]
        #[::noprobe::noprobe]
        pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
            // SAFETY: the caller guarantees both ranges are valid; rep movsb copies forwards
            // with DF clear (the SysV ABI guarantees DF = 0 at calls).
            unsafe {
                ::core::arch::asm!(
                    "rep movsb",
                    inout("rcx") n => _,
                    inout("rdi") dest => _,
                    inout("rsi") src => _,
                    options(nostack, preserves_flags)
                );
            }
            dest
        }

        /// # Safety
        /// `dest` and `src` valid for `n` bytes; they may overlap.
        #[unsafe(no_mangle)]
        #[::noprobe::noprobe]
        pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
            if (dest as usize) <= (src as usize) || (dest as usize) >= (src as usize).wrapping_add(n) {
                // SAFETY: forward copy is correct when dest is below src or the ranges do not overlap.
                unsafe { memcpy(dest, src, n) }
            } else {
                let mut i = n;
                while i > 0 {
                    i -= 1;
                    // SAFETY: i < n, both ranges valid for n bytes; backwards copy handles overlap.
                    unsafe { dest.add(i).write_volatile(src.add(i).read_volatile()) };
                }
                dest
            }
        }

        /// # Safety
        /// `dest` valid for `n` bytes.
        #[unsafe(no_mangle)]
        #[::noprobe::noprobe]
        pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
            // SAFETY: the caller guarantees the range is valid; rep stosb with DF clear.
            unsafe {
                ::core::arch::asm!(
                    "rep stosb",
                    inout("rcx") n => _,
                    inout("rdi") dest => _,
                    in("al") c as u8,
                    options(nostack, preserves_flags)
                );
            }
            dest
        }

        /// # Safety
        /// `a` and `b` valid for `n` bytes.
        #[unsafe(no_mangle)]
        #[::noprobe::noprobe]
        pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
            let mut i = 0;
            while i < n {
                // SAFETY: i < n and both ranges are valid for n bytes. Volatile reads
                // keep the compiler from turning this loop into a call to memcmp.
                let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
                if x != y {
                    return i32::from(x) - i32::from(y);
                }
                i += 1;
            }
            0
        }

        /// # Safety
        /// `a` and `b` valid for `n` bytes.
        #[unsafe(no_mangle)]
        #[::noprobe::noprobe]
        pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
            // SAFETY: same contract as memcmp.
            unsafe { memcmp(a, b, n) }
        }

        /// Never called: the kernel is built with panic = abort.
        #[unsafe(no_mangle)]
        #[::noprobe::noprobe]
        pub extern "C" fn rust_eh_personality() {}

        /// Never called: the kernel is built with panic = abort.
        #[unsafe(no_mangle)]
        #[::noprobe::noprobe]
        pub extern "C" fn _Unwind_Resume() -> ! {
            loop {
                $crate::cpu::disable_interrupts();
                $crate::cpu::halt();
            }
        }
    };
}
