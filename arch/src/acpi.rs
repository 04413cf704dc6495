//! The CPUs of the machine, from the ACPI MADT ("APIC" table).
//!
//! The RSDP is found in the BIOS area 0xE0000..0x100000 (where SeaBIOS,
//! QEMU's firmware, puts it); the RSDT lists the tables; the MADT's type-0
//! entries are the processors' local APICs. Memory is read fault-safely
//! ([`crate::mem::read`]): a broken table yields fewer CPUs, never a fault.
//! The parsing is plain Rust over a read function, host-tested.

/// Most CPUs reported.
pub const MAX_APICS: usize = 64;

/// The enabled processors' local APIC ids, in MADT order (the boot CPU is
/// normally first).
#[derive(Clone, Copy, Debug)]
pub struct Cpus {
    pub apic_ids: [u32; MAX_APICS],
    pub count: usize,
}

impl Cpus {
    /// The ids found.
    pub fn ids(&self) -> &[u32] {
        self.apic_ids.get(..self.count).unwrap_or(&[])
    }
}

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)) == 0
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// Finds the MADT through `read(addr, buf) -> bool` and lists the enabled
/// processors. `None` when there is no RSDP, RSDT or MADT.
pub fn cpus_with(read: &dyn Fn(u64, &mut [u8]) -> bool) -> Option<Cpus> {
    // RSDP: "RSD PTR " on a 16-byte boundary, checksum over 20 bytes.
    let mut rsdt = None;
    let mut addr = 0xE0000u64;
    while addr < 0x10_0000 {
        let mut b = [0u8; 20];
        if read(addr, &mut b) && &b[..8] == b"RSD PTR " && checksum_ok(&b) {
            rsdt = u32_at(&b, 16);
            break;
        }
        addr += 16;
    }
    let rsdt = u64::from(rsdt?);
    let mut hdr = [0u8; 36];
    if !read(rsdt, &mut hdr) || &hdr[..4] != b"RSDT" {
        return None;
    }
    let len = u32_at(&hdr, 4)? as usize;
    let entries = len.saturating_sub(36) / 4;
    for i in 0..entries.min(64) {
        let mut e = [0u8; 4];
        if !read(rsdt + 36 + 4 * i as u64, &mut e) {
            continue;
        }
        let table = u64::from(u32::from_le_bytes(e));
        let mut th = [0u8; 36];
        if !read(table, &mut th) || &th[..4] != b"APIC" {
            continue;
        }
        let tlen = (u32_at(&th, 4)? as usize).min(8192);
        let mut madt = [0u8; 8192];
        let body = madt.get_mut(..tlen)?;
        if !read(table, body) {
            return None;
        }
        return Some(parse_madt(body));
    }
    None
}

/// The enabled processors of a MADT (the whole table, header included).
pub fn parse_madt(madt: &[u8]) -> Cpus {
    let mut cpus = Cpus {
        apic_ids: [0; MAX_APICS],
        count: 0,
    };
    let mut off = 44;
    while let (Some(&kind), Some(&len)) = (madt.get(off), madt.get(off + 1)) {
        if len < 2 {
            break;
        }
        if kind == 0
            && let (Some(&apic_id), Some(flags)) = (madt.get(off + 3), u32_at(madt, off + 4))
            && flags & 1 != 0
            && let Some(slot) = cpus.apic_ids.get_mut(cpus.count)
        {
            *slot = u32::from(apic_id);
            cpus.count += 1;
        }
        off += len as usize;
    }
    cpus
}

/// The machine's enabled processors (fault-safe reads of low memory).
pub fn cpus() -> Option<Cpus> {
    cpus_with(&|addr, buf| crate::mem::read(addr, buf).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn madt(entries: &[&[u8]]) -> Vec<u8> {
        let mut t = vec![0u8; 44];
        t[..4].copy_from_slice(b"APIC");
        for e in entries {
            t.extend_from_slice(e);
        }
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        t
    }

    #[test]
    fn madt_lists_enabled_local_apics() {
        let t = madt(&[
            &[0, 8, 0, 0, 1, 0, 0, 0],
            &[1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0],
            &[0, 8, 1, 1, 1, 0, 0, 0],
            &[0, 8, 2, 7, 0, 0, 0, 0],
            &[0, 8, 3, 3, 1, 0, 0, 0],
        ]);
        let c = parse_madt(&t);
        assert_eq!(c.ids(), &[0, 1, 3]);
    }

    #[test]
    fn rsdp_to_madt() {
        use std::collections::HashMap;
        let mut mem: HashMap<u64, u8> = HashMap::new();
        let mut put = |at: u64, bytes: &[u8]| {
            for (i, b) in bytes.iter().enumerate() {
                mem.insert(at + i as u64, *b);
            }
        };
        let mut rsdp = [0u8; 20];
        rsdp[..8].copy_from_slice(b"RSD PTR ");
        rsdp[16..20].copy_from_slice(&0x10000u32.to_le_bytes());
        let sum = rsdp.iter().fold(0u8, |a, &b| a.wrapping_add(b));
        rsdp[8] = 0u8.wrapping_sub(sum);
        put(0xF5A30, &rsdp);
        let mut rsdt = vec![0u8; 40];
        rsdt[..4].copy_from_slice(b"RSDT");
        rsdt[4..8].copy_from_slice(&40u32.to_le_bytes());
        rsdt[36..40].copy_from_slice(&0x20000u32.to_le_bytes());
        put(0x10000, &rsdt);
        put(
            0x20000,
            &madt(&[&[0, 8, 0, 0, 1, 0, 0, 0], &[0, 8, 1, 1, 1, 0, 0, 0]]),
        );
        let read = |addr: u64, buf: &mut [u8]| {
            for (i, b) in buf.iter_mut().enumerate() {
                match mem.get(&(addr + i as u64)) {
                    Some(v) => *b = *v,
                    None if (0xE0000..0x100000).contains(&addr) => *b = 0,
                    None => return false,
                }
            }
            true
        };
        let c = cpus_with(&read).unwrap();
        assert_eq!(c.ids(), &[0, 1]);
    }
}
