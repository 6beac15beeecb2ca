//! `cuMemHostRegister`: memory the program already has becomes a window when it is a
//! `MAP_SHARED` mapping of a file (a memfd, POSIX shared memory, a regular file). The file
//! goes to vgpu-driver, which maps the same pages for the device (spec §9.3, HOST_REGISTER);
//! copies from and to the range then go straight, as from `cuMemHostAlloc` memory.
//! Private memory (`malloc`, anonymous `mmap`) has no file the device could map: it is
//! refused with `CUDA_ERROR_NOT_SUPPORTED` and a log line, and copies from it are staged.
//!
//! The file is found from `/proc/self/maps`, and opened through `/proc/self/map_files`
//! (which needs `CAP_SYS_ADMIN` or `CAP_CHECKPOINT_RESTORE`) or, failing that, through a
//! descriptor of the same file that the process holds.

use std::fs::File;
use std::os::unix::fs::MetadataExt;

/// One line of `/proc/self/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vma {
    /// First address.
    pub start: usize,
    /// Address past the end.
    pub end: usize,
    /// Readable and writable.
    pub rw: bool,
    /// Shared (`s`), not private (`p`).
    pub shared: bool,
    /// Offset of `start` in the file.
    pub offset: u64,
    /// Device of the file, as `major:minor`.
    pub dev: (u32, u32),
    /// Inode of the file (0: anonymous memory).
    pub inode: u64,
}

/// Parses `/proc/self/maps` text; lines it cannot read are skipped.
pub fn parse_maps(text: &str) -> Vec<Vma> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Vma> {
    let mut f = line.split_whitespace();
    let (range, perms, offset, dev, inode) =
        (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
    let (s, e) = range.split_once('-')?;
    let (maj, min) = dev.split_once(':')?;
    let p = perms.as_bytes();
    Some(Vma {
        start: usize::from_str_radix(s, 16).ok()?,
        end: usize::from_str_radix(e, 16).ok()?,
        rw: p.first() == Some(&b'r') && p.get(1) == Some(&b'w'),
        shared: p.get(3) == Some(&b's'),
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev: (
            u32::from_str_radix(maj, 16).ok()?,
            u32::from_str_radix(min, 16).ok()?,
        ),
        inode: inode.parse().ok()?,
    })
}

/// Where `[start, end)` lies: the mapping that holds `start`, and the offset of `start` in
/// its file. The range must be covered by shared, read-write mappings of one file at
/// consecutive offsets; the error says what it is instead.
pub fn locate(maps: &[Vma], start: usize, end: usize) -> Result<(Vma, u64), String> {
    let first = maps
        .iter()
        .find(|v| v.start <= start && start < v.end)
        .ok_or("the range is not mapped")?;
    let mut at = start;
    for v in maps.iter().skip_while(|v| v.end <= start) {
        if at >= end {
            break;
        }
        if v.start != at && at != start {
            return Err("the range is not mapped in full".into());
        }
        if v.inode == 0 || !v.shared {
            return Err(
                "the range is private memory (malloc, anonymous or MAP_PRIVATE mmap), which the device cannot map: only MAP_SHARED mappings of a file (memfd, shared memory) can be registered".into(),
            );
        }
        if !v.rw {
            return Err("the range is not mapped read-write".into());
        }
        let same_file = v.dev == first.dev && v.inode == first.inode;
        let consecutive =
            v.offset.wrapping_sub(v.start as u64) == first.offset.wrapping_sub(first.start as u64);
        if !same_file || !consecutive {
            return Err("the range spans mappings of different files or offsets".into());
        }
        at = v.end;
    }
    if at < end {
        return Err("the range is not mapped in full".into());
    }
    Ok((first.clone(), first.offset + (start - first.start) as u64))
}

/// Opens, read-write, the file that the mapping `vma` maps.
pub fn open_file(vma: &Vma) -> Result<File, String> {
    open_file_via(vma, true)
}

fn open(path: &str) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
}

/// [`open_file`], through `/proc/self/map_files` first only if `map_files`.
fn open_file_via(vma: &Vma, map_files: bool) -> Result<File, String> {
    let by_map = format!("/proc/self/map_files/{:x}-{:x}", vma.start, vma.end);
    let first_err = match map_files.then(|| open(&by_map)) {
        Some(Ok(f)) => return Ok(f),
        Some(Err(e)) => e.to_string(),
        None => "not tried".into(),
    };
    let want_dev = libc::makedev(vma.dev.0, vma.dev.1);
    let dir = std::fs::read_dir("/proc/self/fd").map_err(|e| format!("/proc/self/fd: {e}"))?;
    for entry in dir.flatten() {
        let path = entry.path();
        let Ok(md) = std::fs::metadata(&path) else {
            continue;
        };
        if md.ino() == vma.inode && md.dev() == want_dev && md.is_file() {
            if let Some(p) = path.to_str() {
                if let Ok(f) = open(p) {
                    return Ok(f);
                }
            }
        }
    }
    Err(format!(
        "its file could not be opened: {by_map}: {first_err}, and the process holds no descriptor of it that can be reopened read-write"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c000-55d0d000 r--p 00000000 08:01 1234 /usr/bin/app
7f0000000000-7f0000004000 rw-s 00000000 00:01 77 /memfd:a (deleted)
7f0000004000-7f0000008000 rw-s 00004000 00:01 77 /memfd:a (deleted)
7f0000008000-7f000000a000 rw-s 00000000 00:01 78 /memfd:b (deleted)
7f000000a000-7f000000c000 rw-p 00000000 00:00 0
7f000000c000-7f000000e000 r--s 00000000 00:01 79 /memfd:c (deleted)
7f0000010000-7f0000011000 rw-s 00000000 00:01 80 /memfd:d (deleted)
";

    #[test]
    fn shared_file_mappings_are_located() {
        let m = parse_maps(MAPS);
        assert_eq!(m.len(), 7);
        assert_eq!(m[1].dev, (0, 1));
        assert!(m[1].shared && m[1].rw && !m[4].shared);
        // Inside one mapping, and across two of the same file at consecutive offsets.
        let (v, off) = locate(&m, 0x7f00_0000_1000, 0x7f00_0000_2000).unwrap();
        assert_eq!((v.inode, off), (77, 0x1000));
        let (_, off) = locate(&m, 0x7f00_0000_3000, 0x7f00_0000_6000).unwrap();
        assert_eq!(off, 0x3000);
    }

    #[test]
    fn other_memory_is_refused_with_the_reason() {
        let m = parse_maps(MAPS);
        let err = |a: usize, b: usize| locate(&m, a, b).unwrap_err();
        assert!(err(0x7f00_0000_a000, 0x7f00_0000_b000).contains("private memory"));
        assert!(err(0x7f00_0000_c000, 0x7f00_0000_d000).contains("read-write"));
        assert!(err(0x7f00_0000_7000, 0x7f00_0000_9000).contains("different files"));
        assert!(err(0x1000, 0x2000).contains("not mapped"));
        assert!(err(0x7f00_0001_0000, 0x7f00_0001_2000).contains("not mapped in full"));
        assert!(err(0x7f00_0000_d000, 0x7f00_0001_1000).contains("read-write"));
    }

    #[test]
    fn the_file_of_a_real_shared_mapping_is_opened() {
        let shm = vgpu_os::shm::SharedMemory::new("hostreg-test", 3 * 4096).unwrap();
        let start = shm.as_ptr() as usize;
        let maps = parse_maps(&std::fs::read_to_string("/proc/self/maps").unwrap());
        let (vma, off) = locate(&maps, start + 4096, start + 3 * 4096).unwrap();
        assert_eq!(off, 4096);
        let b = shm.file().unwrap().metadata().unwrap();
        // Through /proc/self/map_files (as root), and through the descriptor the process
        // holds (the SharedMemory keeps its memfd).
        for via_map_files in [true, false] {
            let a = open_file_via(&vma, via_map_files)
                .unwrap()
                .metadata()
                .unwrap();
            assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
        }
    }
}
