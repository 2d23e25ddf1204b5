//! The guest initramfs, assembled at test time from the host's files.
//!
//! Contents: the host's static busybox with a symlink per applet, the guest
//! kernel's virtio-net and VLAN modules (decompressed when the distribution
//! ships them compressed), `/init` (`guest-files/init.sh`), the serial
//! command loop (`guest-files/serial-loop.sh`), a `udhcpc` event script and
//! the host's dynamically linked [`GUEST_PROGRAMS`] with the libraries `ldd`
//! lists for them.
//! The archive is an uncompressed `newc` cpio written by this module (no
//! `cpio` binary, no root needed to create `/dev/console`); uncompressed
//! because decompressing under TCG costs more boot time than reading the
//! extra megabytes.
//!
//! It is built once per process and cached on disk under a name that hashes
//! all its inputs, so parallel test processes share it and a changed script,
//! busybox or kernel produces a new one. Writes go to a temporary file that is
//! renamed into place, so readers never see a partial archive.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::cache::{publish, Fnv};
use crate::kernel::{file_name, GuestKernel};
use crate::{Error, Result};

/// The guest's `/init`.
pub const INIT_SCRIPT: &str = include_str!("guest-files/init.sh");
/// The command loop the host drives over the serial console.
pub const SERIAL_LOOP_SCRIPT: &str = include_str!("guest-files/serial-loop.sh");
/// `/etc/udhcpc/default.script` (and `/usr/share/udhcpc/default.script`).
pub const UDHCPC_SCRIPT: &str = include_str!("guest-files/udhcpc.sh");

/// Modules that must load for the guest to have virtio NICs, in the order
/// DESIGN.md gives (the actual load order comes from `modules.dep`).
pub const NET_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

/// Modules for 802.1Q inside the guest; a failure to load them is only a
/// warning on the console.
pub const VLAN_MODULES: &[&str] = &["llc", "stp", "garp", "mrp", "8021q"];

/// Dynamically linked host programs the guest gets, with their shared
/// libraries and the dynamic loader, when the host has them: `dhcpcd` (Debian
/// `dhcpcd-base`) is the guest's DHCPv6 client, as Debian's busybox has no
/// `udhcpc6`. Tests that need one check for it in the guest.
pub const GUEST_PROGRAMS: &[&str] = &["/usr/sbin/dhcpcd"];

/// Bump when the archive layout changes in a way the inputs do not show.
const FORMAT_VERSION: u32 = 3;

/// One module to put in the archive.
#[derive(Debug, Clone)]
pub struct ModuleFile {
    /// Normalized module name (`-` → `_`), e.g. `virtio_net`.
    pub name: String,
    /// The file in the module tree (possibly `.ko.xz`/`.ko.zst`/`.ko.gz`).
    pub source: PathBuf,
    /// Whether a load failure should be reported as an error.
    pub required: bool,
}

/// A built initramfs and what went into it.
#[derive(Debug, Clone)]
pub struct Initramfs {
    /// The cpio archive to pass to QEMU's `-initrd`.
    pub path: PathBuf,
    /// The kernel it was built for (boot this one: the modules must match).
    pub kernel: GuestKernel,
    /// What to pass to QEMU's `-kernel` for that kernel: see
    /// [`GuestKernel::boot_image`].
    pub kernel_image: PathBuf,
    /// The modules in load order.
    pub modules: Vec<ModuleFile>,
    /// The busybox binary it contains.
    pub busybox: PathBuf,
    /// The [`GUEST_PROGRAMS`] the host has and their libraries, each at its
    /// host path.
    pub programs: Vec<PathBuf>,
}

/// The standard initramfs (virtio-net + VLAN modules) for the detected
/// kernel, built on first use in this process and cached in [`cache_dir`].
///
/// Safe to call from parallel tests and parallel processes.
pub fn standard() -> Result<&'static Initramfs> {
    static STANDARD: OnceLock<std::result::Result<Initramfs, String>> = OnceLock::new();
    STANDARD
        .get_or_init(|| {
            let kernel = GuestKernel::detect().map_err(|e| e.to_string())?;
            build(&kernel, NET_MODULES, VLAN_MODULES, &cache_dir()).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Failed(format!("cannot build the guest initramfs: {e}")))
}

/// Where built archives are cached: `$VNET_TESTBED_CACHE` if set; otherwise
/// `target/vnet-testbed-cache/` when running from a cargo test executable
/// (`target/<profile>/deps/`), else `$TMPDIR/vnet-testbed-cache`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VNET_TESTBED_CACHE") {
        return PathBuf::from(dir);
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(deps) = exe.parent() {
            if deps.file_name().is_some_and(|n| n == "deps") {
                if let Some(target) = deps.parent().and_then(Path::parent) {
                    return target.join("vnet-testbed-cache");
                }
            }
        }
    }
    std::env::temp_dir().join("vnet-testbed-cache")
}

/// Builds (or finds in `cache`) an initramfs for `kernel` with the `required`
/// and `optional` modules and their dependencies, and prepares the kernel
/// image to boot with it ([`GuestKernel::boot_image`]).
pub fn build(
    kernel: &GuestKernel,
    required: &[&str],
    optional: &[&str],
    cache: &Path,
) -> Result<Initramfs> {
    let busybox = find_busybox()?;
    let modules = resolve_modules(&kernel.modules_dir, required, optional)?;
    let programs = guest_programs()?;

    let mut key = Fnv::new();
    key.add(&FORMAT_VERSION.to_le_bytes());
    for text in [
        INIT_SCRIPT,
        SERIAL_LOOP_SCRIPT,
        UDHCPC_SCRIPT,
        &kernel.version,
    ] {
        key.add(text.as_bytes());
    }
    key.add_file(&busybox)?;
    for p in &programs {
        key.add(p.as_os_str().as_encoded_bytes());
        key.add_file(p)?;
    }
    for m in &modules {
        key.add(m.name.as_bytes());
        key.add(&[u8::from(m.required)]);
        key.add_file(&m.source)?;
    }
    let path = cache.join(format!(
        "initramfs-{}-{:016x}.cpio",
        kernel.version,
        key.finish()
    ));
    let initramfs = Initramfs {
        path: path.clone(),
        kernel: kernel.clone(),
        kernel_image: kernel.boot_image(cache),
        modules,
        busybox,
        programs,
    };
    if path.is_file() {
        return Ok(initramfs);
    }
    fs::create_dir_all(cache)
        .map_err(|e| Error::Failed(format!("cannot create {}: {e}", cache.display())))?;
    let tmp = tempfile::Builder::new()
        .prefix(".initramfs-")
        .tempfile_in(cache)?;
    write_archive(&initramfs, tmp.as_file())?;
    publish(tmp, &path)?;
    Ok(initramfs)
}

fn write_archive(initramfs: &Initramfs, file: &fs::File) -> Result<()> {
    let mut cpio = Cpio::new(BufWriter::new(file));
    for dir in [
        "/bin",
        "/sbin",
        "/usr/bin",
        "/usr/sbin",
        "/dev",
        "/proc",
        "/sys",
        "/tmp",
        "/run",
        "/root",
        "/etc/vnet",
        "/lib/modules/vnet",
        "/usr/share/udhcpc",
        // dhcpcd's state, run and privilege-separation (its user's home) directories.
        "/var/lib/dhcpcd",
        "/run/dhcpcd",
        "/usr/lib/dhcpcd",
    ] {
        cpio.dir(dir)?;
    }
    // The kernel opens /dev/console for init's stdio before /init can mount
    // devtmpfs: without this node init runs with no console at all.
    cpio.char_dev("/dev/console", 0o600, 5, 1)?;
    cpio.file("/init", 0o755, INIT_SCRIPT.as_bytes())?;
    cpio.file(
        "/etc/vnet/serial-loop",
        0o755,
        SERIAL_LOOP_SCRIPT.as_bytes(),
    )?;
    // Debian's busybox looks for /etc/udhcpc/default.script, upstream's
    // default is /usr/share/udhcpc/default.script: provide both.
    cpio.file(
        "/etc/udhcpc/default.script",
        0o755,
        UDHCPC_SCRIPT.as_bytes(),
    )?;
    cpio.symlink(
        "/usr/share/udhcpc/default.script",
        "/etc/udhcpc/default.script",
    )?;
    cpio.file(
        "/etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\ndhcpcd:x:100:65534::/usr/lib/dhcpcd:/bin/false\n",
    )?;
    cpio.file("/etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")?;
    cpio.file("/etc/hosts", 0o644, b"127.0.0.1 localhost\n")?;

    let bb = fs::read(&initramfs.busybox)?;
    cpio.file("/bin/busybox", 0o755, &bb)?;
    for applet in busybox_applets(&initramfs.busybox)? {
        let applet = format!("/{}", applet.trim_start_matches('/'));
        if applet != "/bin/busybox" && applet != "/init" {
            cpio.symlink(&applet, "/bin/busybox")?;
        }
    }

    for p in &initramfs.programs {
        let data =
            fs::read(p).map_err(|e| Error::Failed(format!("cannot read {}: {e}", p.display())))?;
        cpio.file(&p.to_string_lossy(), 0o755, &data)?;
    }

    let mut list = String::new();
    for m in &initramfs.modules {
        let data = read_module(&m.source)?;
        cpio.file(&format!("/lib/modules/vnet/{}.ko", m.name), 0o644, &data)?;
        let kind = if m.required { "required" } else { "optional" };
        list.push_str(&format!("{} {kind}\n", m.name));
    }
    cpio.file("/etc/vnet/modules", 0o644, list.as_bytes())?;
    cpio.finish()?.flush()?;
    Ok(())
}

/// `$VNET_GUEST_BUSYBOX`, else `/bin/busybox` or `/usr/bin/busybox`; it must
/// be statically linked (Debian: `busybox-static`), since the initramfs has
/// no C library.
fn find_busybox() -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("VNET_GUEST_BUSYBOX") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec!["/bin/busybox".into(), "/usr/bin/busybox".into()],
    };
    for p in candidates {
        if let Ok(bytes) = fs::read(&p) {
            if is_dynamic_elf(&bytes) {
                return Err(Error::Failed(format!(
                    "{} is dynamically linked; install busybox-static or set VNET_GUEST_BUSYBOX",
                    p.display()
                )));
            }
            return Ok(p);
        }
    }
    Err(Error::Failed(
        "no busybox (apt-get install busybox-static, or set VNET_GUEST_BUSYBOX)".into(),
    ))
}

/// Whether a 64-bit little-endian ELF file has a `PT_INTERP` program header.
fn is_dynamic_elf(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    if elf.get(..5) != Some(b"\x7fELF\x02") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).any(|i| {
        const PT_INTERP: u32 = 3;
        u32_at(phoff as usize + i * usize::from(phentsize)) == Some(PT_INTERP)
    })
}

/// The [`GUEST_PROGRAMS`] this host has, each followed by the libraries and
/// the loader `ldd` lists for it.
fn guest_programs() -> Result<Vec<PathBuf>> {
    let mut files = BTreeSet::new();
    for program in GUEST_PROGRAMS.iter().filter(|p| Path::new(p).is_file()) {
        files.insert(PathBuf::from(program));
        files.extend(ldd_paths(&crate::cmd::run(&["ldd", program])?));
    }
    Ok(files.into_iter().collect())
}

/// The files in `ldd` output: `libc.so.6 => /lib/.../libc.so.6 (0x...)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vDSO has no file.
fn ldd_paths(ldd: &str) -> Vec<PathBuf> {
    ldd.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split_once("=> ").map_or(l, |(_, p)| p);
            let path = path.split(" (").next()?.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn busybox_applets(busybox: &Path) -> Result<Vec<String>> {
    let out = crate::cmd::run(&[&busybox.to_string_lossy(), "--list-full"])?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// Parses `modules.dep` and returns the requested modules with all their
/// dependencies, dependencies first. Required modules that are neither in
/// `modules.dep` nor built in (`modules.builtin`) are an error; missing
/// optional ones are left out.
pub fn resolve_modules(
    modules_dir: &Path,
    required: &[&str],
    optional: &[&str],
) -> Result<Vec<ModuleFile>> {
    let dep_path = modules_dir.join("modules.dep");
    let dep = fs::read_to_string(&dep_path)
        .map_err(|e| Error::Failed(format!("cannot read {}: {e}", dep_path.display())))?;
    let builtin = fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    let builtin: BTreeSet<String> = builtin.lines().map(module_name).collect();

    // name -> (relative path, dependency names)
    let mut table: HashMap<String, (String, Vec<String>)> = HashMap::new();
    for line in dep.lines() {
        let Some((path, deps)) = line.split_once(':') else {
            continue;
        };
        let deps = deps.split_whitespace().map(module_name).collect();
        table.insert(module_name(path), (path.trim().to_string(), deps));
    }

    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for (names, is_required) in [(required, true), (optional, false)] {
        for &name in names {
            let name = name.replace('-', "_");
            if !table.contains_key(&name) {
                if builtin.contains(&name) || !is_required {
                    continue;
                }
                return Err(Error::Failed(format!(
                    "module {name} is neither in {} nor built in",
                    dep_path.display()
                )));
            }
            visit(&name, &table, &mut seen, &mut order);
        }
    }
    let required: BTreeSet<String> = required.iter().map(|n| n.replace('-', "_")).collect();
    let mut required_closure = BTreeSet::new();
    for name in &required {
        closure(name, &table, &mut required_closure);
    }
    Ok(order
        .into_iter()
        .map(|name| ModuleFile {
            source: modules_dir.join(&table[&name].0),
            required: required_closure.contains(&name),
            name,
        })
        .collect())
}

fn visit(
    name: &str,
    table: &HashMap<String, (String, Vec<String>)>,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<String>,
) {
    if !seen.insert(name.to_string()) {
        return;
    }
    if let Some((_, deps)) = table.get(name) {
        for d in deps {
            visit(d, table, seen, order);
        }
        order.push(name.to_string());
    }
}

fn closure(name: &str, table: &HashMap<String, (String, Vec<String>)>, out: &mut BTreeSet<String>) {
    if out.insert(name.to_string()) {
        if let Some((_, deps)) = table.get(name) {
            for d in deps {
                closure(d, table, out);
            }
        }
    }
}

/// `kernel/drivers/net/virtio_net.ko.xz` → `virtio_net`.
fn module_name(path: &str) -> String {
    let base = path.trim().rsplit('/').next().unwrap_or("");
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

/// Reads a module file, decompressing `.ko.xz`, `.ko.zst` and `.ko.gz` with
/// the host's `xz`/`zstd`/`gzip` (busybox `insmod` cannot load compressed
/// modules).
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = file_name(path);
    let tool = if name.ends_with(".ko.xz") {
        "xz"
    } else if name.ends_with(".ko.zst") {
        "zstd"
    } else if name.ends_with(".ko.gz") {
        "gzip"
    } else {
        return fs::read(path)
            .map_err(|e| Error::Failed(format!("cannot read {}: {e}", path.display())));
    };
    let out = crate::cmd::output(&[tool, "-dc", &path.to_string_lossy()])?;
    crate::cmd::check(&[tool, "-dc", &path.to_string_lossy()], &out)?;
    Ok(out.stdout)
}

/// A writer for the `newc` cpio format the kernel unpacks as initramfs.
struct Cpio<W: Write> {
    out: W,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl<W: Write> Cpio<W> {
    fn new(out: W) -> Cpio<W> {
        Cpio {
            out,
            ino: 1,
            dirs: BTreeSet::new(),
        }
    }

    /// A directory, after its parents (the kernel does not create missing
    /// parents while unpacking).
    fn dir(&mut self, path: &str) -> io::Result<()> {
        let path = path.trim_end_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return Ok(());
        }
        self.parents(path)?;
        self.dirs.insert(path.to_string());
        self.entry(path, 0o040_755, 0, &[])
    }

    fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.parents(path)?;
        self.entry(path, 0o100_000 | perm, 0, data)
    }

    fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.parents(path)?;
        self.entry(path, 0o120_777, 0, target.as_bytes())
    }

    fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.parents(path)?;
        self.entry(path, 0o020_000 | perm, (major << 8) | minor, &[])
    }

    fn parents(&mut self, path: &str) -> io::Result<()> {
        match path.rsplit_once('/') {
            Some((parent, _)) if !parent.is_empty() => self.dir(parent),
            _ => Ok(()),
        }
    }

    /// One header + name + data; `rdev` packs major << 8 | minor.
    fn entry(&mut self, path: &str, mode: u32, rdev: u32, data: &[u8]) -> io::Result<()> {
        let name = path.trim_start_matches('/');
        let ino = self.ino;
        self.ino += 1;
        let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed, so archives are reproducible
            data.len() as u32,
            0, // dev major
            0, // dev minor
            rdev >> 8,
            rdev & 0xff,
            name.len() as u32 + 1,
            0, // check
        ];
        let mut header = String::from("070701");
        for f in fields {
            header.push_str(&format!("{f:08x}"));
        }
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(110 + name.len() + 1)?;
        self.out.write_all(data)?;
        self.pad(data.len())
    }

    fn pad(&mut self, len: usize) -> io::Result<()> {
        let n = (4 - len % 4) % 4;
        self.out.write_all(&[0u8; 3][..n])
    }

    fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, 0, &[])?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_are_normalized() {
        assert_eq!(
            module_name("kernel/drivers/net/virtio_net.ko"),
            "virtio_net"
        );
        assert_eq!(module_name(" kernel/net/8021q/8021q.ko.xz"), "8021q");
        assert_eq!(module_name("kernel/x/foo-bar.ko.zst"), "foo_bar");
    }

    #[test]
    fn modules_resolve_dependencies_first() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("modules.dep"),
            "kernel/b.ko: kernel/a.ko\nkernel/a.ko:\nkernel/c.ko.xz: kernel/b.ko kernel/a.ko\nkernel/v.ko:\n",
        )
        .unwrap();
        fs::write(dir.path().join("modules.builtin"), "kernel/builtin.ko\n").unwrap();
        let mods = resolve_modules(dir.path(), &["c", "builtin"], &["v", "absent"]).unwrap();
        let names: Vec<(&str, bool)> = mods.iter().map(|m| (m.name.as_str(), m.required)).collect();
        assert_eq!(names, [("a", true), ("b", true), ("c", true), ("v", false)]);
        assert!(resolve_modules(dir.path(), &["absent"], &[]).is_err());
    }

    #[test]
    fn cpio_entries_are_aligned_and_terminated() {
        let mut cpio = Cpio::new(Vec::new());
        cpio.file("/a/b/c", 0o644, b"hello").unwrap();
        let out = cpio.finish().unwrap();
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        // Parents first, then the file, then the trailer.
        let a = text.find("a\0").unwrap();
        let ab = text.find("a/b\0").unwrap();
        let abc = text.find("a/b/c\0").unwrap();
        assert!(a < ab && ab < abc);
        assert!(text.ends_with("TRAILER!!!\0\0\0\0\0") || text.contains("TRAILER!!!\0"));
        assert!(out.starts_with(b"070701"));
    }

    #[test]
    fn ldd_output_yields_libraries_and_loader() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fae)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007fae)\n";
        assert_eq!(
            ldd_paths(out),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn elf_interpreter_is_detected() {
        assert!(!is_dynamic_elf(b"not an elf"));
        if let Ok(sh) = fs::read("/bin/sh") {
            // /bin/sh is dynamically linked on every distribution we run on.
            assert!(is_dynamic_elf(&sh));
        }
    }
}
