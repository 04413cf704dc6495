//! The debugger's line: COM2 (a 16550) as a gdbstub `Connection`, and raw
//! packet output for what gdbstub does not send itself (event `O` packets
//! while the kernel runs, error replies after a dropped packet).

use arch::uart::{COM2, Uart};
use gdbstub::conn::Connection;

/// The stub's UART.
#[derive(Clone, Copy, Debug)]
pub struct Com2(pub Uart);

impl Com2 {
    pub const fn new() -> Self {
        Com2(Uart::new(COM2))
    }
}

impl Default for Com2 {
    fn default() -> Self {
        Self::new()
    }
}

impl Connection for Com2 {
    type Error = core::convert::Infallible;

    fn write(&mut self, byte: u8) -> Result<(), Self::Error> {
        // Through the `qSupported` feature rewrite (idle: a plain write).
        crate::conditions::write_byte(&self.0, byte);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Writes `$BODY#cs` (body bytes must not need escaping).
pub fn write_packet(uart: &Uart, body: &[u8]) {
    let sum = body.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    uart.write_byte(b'$');
    uart.write_bytes(body);
    uart.write_byte(b'#');
    let mut cs = [0u8; 2];
    proto::hex::encode(&[sum], &mut cs);
    uart.write_bytes(&cs);
}

/// An `O` packet written as it is rendered (hex-encoded, checksummed on
/// the fly): no line buffer, so no length limit and nothing lost.
pub struct ConsoleWriter {
    uart: Uart,
    sum: u8,
}

impl ConsoleWriter {
    /// Starts the packet (`$O`).
    pub fn begin(uart: Uart) -> Self {
        uart.write_byte(b'$');
        uart.write_byte(b'O');
        ConsoleWriter { uart, sum: b'O' }
    }

    /// Ends the packet (`#cs`).
    pub fn finish(self) {
        let mut pair = [0u8; 2];
        self.uart.write_byte(b'#');
        proto::hex::encode(&[self.sum], &mut pair);
        self.uart.write_bytes(&pair);
    }
}

impl core::fmt::Write for ConsoleWriter {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let mut pair = [0u8; 2];
        for &b in s.as_bytes() {
            proto::hex::encode(&[b], &mut pair);
            self.sum = self.sum.wrapping_add(pair[0]).wrapping_add(pair[1]);
            self.uart.write_bytes(&pair);
        }
        Ok(())
    }
}

/// Writes an `O` packet carrying `text` (hex-encoded, as gdb expects).
pub fn write_console(uart: &Uart, text: &[u8]) {
    let mut sum = b'O';
    let mut pair = [0u8; 2];
    for &b in text {
        proto::hex::encode(&[b], &mut pair);
        sum = sum.wrapping_add(pair[0]).wrapping_add(pair[1]);
    }
    uart.write_byte(b'$');
    uart.write_byte(b'O');
    for &b in text {
        proto::hex::encode(&[b], &mut pair);
        uart.write_bytes(&pair);
    }
    uart.write_byte(b'#');
    proto::hex::encode(&[sum], &mut pair);
    uart.write_bytes(&pair);
}
