//! Guest RAM backed by a file the host maps too (issue 17): a private
//! directory (mode 0700, unpredictable name from `mkdtemp`) holding one
//! file (mode 0600) that QEMU uses as the guest's RAM with `share=on`, so
//! `kdbg --memory FILE` reads guest memory and the event rings straight
//! from the mapping.
//!
//! The QEMU arguments, for running it by hand:
//!
//! ```text
//! -m 128M -object memory-backend-file,id=mem,size=128M,mem-path=FILE,share=on
//! -machine memory-backend=mem
//! ```

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The file's name inside its private directory.
pub const FILE_NAME: &str = "guest-ram";

/// A private directory holding the guest RAM file; removed on drop.
#[derive(Debug)]
pub struct GuestRam {
    dir: PathBuf,
    file: PathBuf,
}

/// Where the private directory goes: `$XDG_RUNTIME_DIR` (per user, 0700),
/// else `/dev/shm` (RAM, no disk write-back), else the temp directory.
fn base_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        let d = PathBuf::from(d);
        if d.is_dir() {
            return d;
        }
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && fs::metadata(shm).is_ok_and(|m| !m.permissions().readonly()) {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

impl GuestRam {
    /// Creates the directory (0700, random name) and the file (0600,
    /// `mib` MiB, sparse) that QEMU will map.
    pub fn create(mib: u32) -> io::Result<GuestRam> {
        let template = base_dir().join("kdbg-ram-XXXXXX");
        let c = CString::new(template.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut raw = c.into_bytes_with_nul();
        // SAFETY: `raw` is a NUL-terminated, writable template ending in
        // XXXXXX, as mkdtemp requires; it replaces the X's in place.
        let p = unsafe { libc::mkdtemp(raw.as_mut_ptr().cast()) };
        if p.is_null() {
            return Err(io::Error::last_os_error());
        }
        raw.pop();
        let dir = PathBuf::from(std::ffi::OsStr::from_bytes(&raw));
        // mkdtemp makes it 0700 already; say so explicitly.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        let file = dir.join(FILE_NAME);
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)?;
        f.set_len(u64::from(mib) << 20)?;
        Ok(GuestRam { dir, file })
    }

    /// The file QEMU maps as guest RAM (`kdbg --memory FILE`).
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The private directory holding it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// QEMU's arguments backing `-m MIB` RAM with the file.
    pub fn qemu_args(&self, mib: u32) -> Vec<String> {
        qemu_args(&self.file, mib)
    }
}

/// QEMU's arguments backing `mib` MiB of guest RAM with `file`.
pub fn qemu_args(file: &Path, mib: u32) -> Vec<String> {
    vec![
        "-object".into(),
        format!(
            "memory-backend-file,id=mem,size={mib}M,mem-path={},share=on",
            file.display()
        ),
        "-machine".into(),
        "memory-backend=mem".into(),
    ]
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.file);
        let _ = fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn private_directory_and_file() {
        let a = GuestRam::create(2).unwrap();
        let b = GuestRam::create(2).unwrap();
        assert_ne!(a.dir(), b.dir(), "names are not predictable");
        assert_eq!(fs::metadata(a.dir()).unwrap().mode() & 0o777, 0o700);
        let m = fs::metadata(a.file()).unwrap();
        assert_eq!(m.mode() & 0o777, 0o600);
        assert_eq!(m.len(), 2 << 20);
        let args = a.qemu_args(2).join(" ");
        assert!(args.contains("share=on") && args.contains("memory-backend=mem"));
        let dir = a.dir().to_path_buf();
        drop(a);
        assert!(!dir.exists());
    }
}
