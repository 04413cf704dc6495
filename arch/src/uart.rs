//! 16550 UART driver (COM1 is the console, COM2 belongs to the debugger).
//!
//! Polled transmit, polled or interrupt-driven receive. The driver keeps no
//! state besides the base port, so `Uart` is `Copy` and may be created
//! anywhere (including from trap handlers) without locking; serialising whole
//! lines is the caller's business.

use crate::port::{inb, outb};

/// Base I/O port of COM1.
pub const COM1: u16 = 0x3F8;
/// Base I/O port of COM2.
pub const COM2: u16 = 0x2F8;
/// Legacy PIC IRQ line of COM1 (vector = PIC base + 4).
pub const COM1_IRQ: u8 = 4;
/// Legacy PIC IRQ line of COM2 (vector = PIC base + 3).
pub const COM2_IRQ: u8 = 3;

// Register offsets from the base port.
const DATA: u16 = 0; // RBR (read) / THR (write); DLL when DLAB=1
const IER: u16 = 1; // interrupt enable; DLM when DLAB=1
const FCR: u16 = 2; // FIFO control (write) / IIR (read)
const LCR: u16 = 3; // line control
const MCR: u16 = 4; // modem control
const LSR: u16 = 5; // line status
const SCR: u16 = 7; // scratch

const LCR_DLAB: u8 = 0x80;
const LCR_8N1: u8 = 0x03;
const LSR_DATA_READY: u8 = 0x01;
const LSR_THR_EMPTY: u8 = 0x20;
const IER_RX_AVAILABLE: u8 = 0x01;
/// DTR | RTS | OUT2 (OUT2 gates the IRQ line to the PIC on PC hardware).
const MCR_DTR_RTS_OUT2: u8 = 0x0B;
/// Enable + clear both FIFOs, interrupt at 1 byte.
const FCR_ENABLE_CLEAR: u8 = 0x07;

/// Divisor for 115200 baud from the 1.8432 MHz clock.
const DIVISOR_115200: u16 = 1;

/// Why a UART could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartError {
    /// The scratch register did not read back what was written: no UART here.
    NotPresent,
}

/// One 16550 UART at an I/O base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uart {
    base: u16,
}

impl Uart {
    /// A handle for the UART at `base` (e.g. [`COM1`]). Does not touch the device.
    pub const fn new(base: u16) -> Self {
        Uart { base }
    }

    /// The base I/O port.
    pub const fn base(&self) -> u16 {
        self.base
    }

    /// Programs 115200 baud, 8N1, FIFOs on, receive interrupt off.
    ///
    /// # Safety
    /// A 16550 (or nothing) must live at `base`; the caller owns the device.
    pub unsafe fn init(&self) -> Result<(), UartError> {
        // SAFETY: the caller guarantees a 16550 or nothing lives at `base`.
        if !unsafe { self.present() } {
            return Err(UartError::NotPresent);
        }
        // SAFETY: as above; a UART is present.
        unsafe {
            outb(self.base + IER, 0x00);
            outb(self.base + LCR, LCR_DLAB);
            let [lo, hi] = DIVISOR_115200.to_le_bytes();
            outb(self.base + DATA, lo);
            outb(self.base + IER, hi);
            outb(self.base + LCR, LCR_8N1);
            outb(self.base + FCR, FCR_ENABLE_CLEAR);
            outb(self.base + MCR, MCR_DTR_RTS_OUT2);
        }
        Ok(())
    }

    /// Like [`init`](Self::init), but keeps the byte a peer sent before the
    /// UART was set up. Until then the UART is in 16450 mode, holding one
    /// received byte (QEMU queues the rest in its chardev); enabling the FIFOs
    /// flushes that byte, which would cut the leading `$` off the first
    /// packet of a debugger that connected early.
    ///
    /// # Safety
    /// As for [`init`](Self::init).
    pub unsafe fn init_keeping_pending(&self) -> Result<Option<u8>, UartError> {
        // SAFETY: the caller guarantees a 16550 or nothing lives at `base`.
        if !unsafe { self.present() } {
            return Err(UartError::NotPresent);
        }
        let pending = self.try_read_byte();
        // SAFETY: as above.
        unsafe { self.init() }?;
        Ok(pending)
    }

    /// The scratch register reads back what was written: a UART is there.
    ///
    /// # Safety
    /// A 16550 (or nothing) must live at `base`.
    unsafe fn present(&self) -> bool {
        // SAFETY: the caller guarantees a 16550 or nothing lives at `base`;
        // the scratch register has no effect on the device.
        unsafe {
            outb(self.base + SCR, 0x5A);
            inb(self.base + SCR) == 0x5A
        }
    }

    /// Sends one byte, waiting for the transmit holding register to drain.
    pub fn write_byte(&self, byte: u8) {
        // SAFETY: reading LSR and writing THR of this UART have no memory effects.
        unsafe {
            // Bounded spin: a missing UART must not hang the kernel forever.
            for _ in 0..100_000 {
                if inb(self.base + LSR) & LSR_THR_EMPTY != 0 {
                    break;
                }
            }
            outb(self.base + DATA, byte);
        }
    }

    /// Sends all bytes of `bytes`.
    pub fn write_bytes(&self, bytes: &[u8]) {
        for &b in bytes {
            self.write_byte(b);
        }
    }

    /// Sends `s`, turning `\n` into `\r\n` for terminals.
    pub fn write_str_crlf(&self, s: &str) {
        for &b in s.as_bytes() {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
    }

    /// A received byte is waiting (without taking it).
    pub fn data_ready(&self) -> bool {
        // SAFETY: reading LSR of this UART has no memory effects.
        unsafe { inb(self.base + LSR) & LSR_DATA_READY != 0 }
    }

    /// A received byte, if one is waiting.
    pub fn try_read_byte(&self) -> Option<u8> {
        // SAFETY: reading LSR/RBR of this UART has no memory effects (it pops the FIFO).
        unsafe {
            if inb(self.base + LSR) & LSR_DATA_READY != 0 {
                Some(inb(self.base + DATA))
            } else {
                None
            }
        }
    }

    /// Raises the UART's IRQ whenever a byte arrives.
    pub fn enable_rx_interrupt(&self) {
        // SAFETY: writing IER of this UART has no memory effects.
        unsafe { outb(self.base + IER, IER_RX_AVAILABLE) };
    }

    /// Stops raising the IRQ on received bytes (polled receive still works).
    pub fn disable_rx_interrupt(&self) {
        // SAFETY: writing IER of this UART has no memory effects.
        unsafe { outb(self.base + IER, 0) };
    }
}

impl core::fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write_str_crlf(s);
        Ok(())
    }
}
