//! Device-side `printf`: `vprintf(format, arguments)` as CUDA compiles `printf` calls.
//!
//! The format is a C string in device memory; the arguments are packed in a buffer, each
//! at an offset aligned to its size: `int`-sized conversions take 4 bytes, `l`/`ll`
//! conversions, `double` (floats are promoted), `%s` and `%p` take 8. Conversions follow C:
//! flags `-+ 0#`, width, precision, and `d i u o x X c s f F e E g G p %`.

use crate::exec::Fault;

/// Longest format or `%s` string read from device memory.
const MAX_STRING: usize = 4096;
/// Widest field and longest precision honoured (a format from the guest asks for any).
const MAX_FIELD: usize = 1024;

/// Reads `size` bytes at a generic address.
pub type Load<'a> = dyn FnMut(u64, u32) -> Result<u64, Fault> + 'a;

fn string(load: &mut Load<'_>, addr: u64) -> Result<Vec<u8>, Fault> {
    let mut out = Vec::new();
    for i in 0..MAX_STRING as u64 {
        let b = load(addr + i, 1)? as u8;
        if b == 0 {
            break;
        }
        out.push(b);
    }
    Ok(out)
}

struct Spec {
    left: bool,
    plus: bool,
    space: bool,
    zero: bool,
    alt: bool,
    width: usize,
    prec: Option<usize>,
}

fn pad(s: String, sp: &Spec, numeric: bool) -> String {
    if s.len() >= sp.width {
        return s;
    }
    let fill = sp.width - s.len();
    if sp.left {
        s + &" ".repeat(fill)
    } else if sp.zero && numeric {
        let (sign, rest) = match s.as_bytes().first() {
            Some(b'-' | b'+' | b' ') => s.split_at(1),
            _ => ("", s.as_str()),
        };
        format!("{sign}{}{rest}", "0".repeat(fill))
    } else {
        " ".repeat(fill) + &s
    }
}

/// C's `%e` of `v` with `prec` digits.
fn exp(v: f64, prec: usize, upper: bool) -> String {
    let s = format!("{v:.prec$e}");
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    let e: i32 = e.parse().unwrap_or(0);
    let r = format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    if upper {
        r.to_uppercase()
    } else {
        r
    }
}

/// C's `%g`.
fn general(v: f64, prec: usize, alt: bool, upper: bool) -> String {
    let p = prec.max(1);
    if v == 0.0 {
        return "0".into();
    }
    let e = v.abs().log10().floor() as i32;
    let mut s = if e < -4 || e >= p as i32 {
        exp(v, p - 1, upper)
    } else {
        format!("{v:.*}", (p as i32 - 1 - e).max(0) as usize)
    };
    if !alt {
        if let Some((m, rest)) = s.split_once(['e', 'E']) {
            let m = if m.contains('.') {
                m.trim_end_matches('0').trim_end_matches('.')
            } else {
                m
            };
            let mark = if upper { 'E' } else { 'e' };
            s = format!("{m}{mark}{rest}");
        } else if s.contains('.') {
            s = s.trim_end_matches('0').trim_end_matches('.').to_string();
        }
    }
    s
}

/// Formats the call `vprintf(fmt, args)`.
pub fn format(load: &mut Load<'_>, fmt: u64, args: u64) -> Result<String, Fault> {
    let f = string(load, fmt)?;
    let mut out = String::new();
    let mut at = 0u64;
    let mut next = |load: &mut Load<'_>, size: u32| -> Result<u64, Fault> {
        at = at.next_multiple_of(u64::from(size));
        let v = load(args + at, size)?;
        at += u64::from(size);
        Ok(v)
    };
    let mut i = 0;
    while i < f.len() {
        let c = f[i];
        i += 1;
        if c != b'%' {
            out.push(c as char);
            continue;
        }
        let mut sp = Spec {
            left: false,
            plus: false,
            space: false,
            zero: false,
            alt: false,
            width: 0,
            prec: None,
        };
        while let Some(&fl) = f.get(i) {
            match fl {
                b'-' => sp.left = true,
                b'+' => sp.plus = true,
                b' ' => sp.space = true,
                b'0' => sp.zero = true,
                b'#' => sp.alt = true,
                _ => break,
            }
            i += 1;
        }
        while let Some(d @ b'0'..=b'9') = f.get(i) {
            sp.width = (sp.width * 10 + usize::from(d - b'0')).min(MAX_FIELD);
            i += 1;
        }
        if f.get(i) == Some(&b'.') {
            i += 1;
            let mut p = 0;
            while let Some(d @ b'0'..=b'9') = f.get(i) {
                p = (p * 10 + usize::from(d - b'0')).min(MAX_FIELD);
                i += 1;
            }
            sp.prec = Some(p);
        }
        let mut long = false;
        while let Some(b'l' | b'h' | b'z' | b'j' | b't' | b'L') = f.get(i) {
            long |= matches!(f[i], b'l' | b'z' | b'j' | b't' | b'L');
            i += 1;
        }
        let Some(&conv) = f.get(i) else { break };
        i += 1;
        let isize_ = if long { 8 } else { 4 };
        let sign = |neg: bool, sp: &Spec| {
            if neg {
                "-"
            } else if sp.plus {
                "+"
            } else if sp.space {
                " "
            } else {
                ""
            }
        };
        let s = match conv {
            b'%' => "%".to_string(),
            b'd' | b'i' => {
                let v = next(load, isize_)?;
                let v = if long {
                    v as i64
                } else {
                    i64::from(v as u32 as i32)
                };
                let digits = v.unsigned_abs().to_string();
                let digits = match sp.prec {
                    Some(p) if digits.len() < p => "0".repeat(p - digits.len()) + &digits,
                    _ => digits,
                };
                pad(
                    format!("{}{digits}", sign(v < 0, &sp)),
                    &sp,
                    sp.prec.is_none(),
                )
            }
            b'u' | b'x' | b'X' | b'o' => {
                let v = next(load, isize_)?;
                let v = if long { v } else { u64::from(v as u32) };
                let body = match conv {
                    b'u' => v.to_string(),
                    b'x' => format!("{}{v:x}", if sp.alt && v != 0 { "0x" } else { "" }),
                    b'X' => format!("{}{v:X}", if sp.alt && v != 0 { "0X" } else { "" }),
                    _ => format!("{}{v:o}", if sp.alt { "0" } else { "" }),
                };
                pad(body, &sp, sp.prec.is_none())
            }
            b'c' => pad(((next(load, 4)? as u8) as char).to_string(), &sp, false),
            b's' => {
                let p = next(load, 8)?;
                let mut text = if p == 0 {
                    "(null)".to_string()
                } else {
                    String::from_utf8_lossy(&string(load, p)?).into_owned()
                };
                if let Some(p) = sp.prec {
                    text = text.chars().take(p).collect();
                }
                pad(text, &sp, false)
            }
            b'p' => pad(format!("0x{:x}", next(load, 8)?), &sp, false),
            b'f' | b'F' | b'e' | b'E' | b'g' | b'G' | b'a' | b'A' => {
                let v = f64::from_bits(next(load, 8)?);
                let prec = sp.prec.unwrap_or(6);
                let body = if v.is_nan() {
                    "nan".to_string()
                } else if v.is_infinite() {
                    "inf".to_string()
                } else {
                    match conv {
                        b'f' | b'F' => format!("{:.prec$}", v.abs()),
                        b'e' | b'E' => exp(v.abs(), prec, conv == b'E'),
                        b'g' | b'G' => general(v.abs(), prec, sp.alt, conv == b'G'),
                        _ => format!("{:e}", v.abs()),
                    }
                };
                let body = if conv.is_ascii_uppercase() {
                    body.to_uppercase()
                } else {
                    body
                };
                pad(
                    format!("{}{body}", sign(v.is_sign_negative() && !v.is_nan(), &sp)),
                    &sp,
                    v.is_finite(),
                )
            }
            other => format!("%{}", other as char),
        };
        out.push_str(&s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory with a format at 0x100 and arguments at 0x200, strings after 0x300.
    fn run(fmt: &str, args: &[u8]) -> String {
        let mut mem = vec![0u8; 0x400];
        mem[0x100..0x100 + fmt.len()].copy_from_slice(fmt.as_bytes());
        mem[0x200..0x200 + args.len()].copy_from_slice(args);
        mem[0x300..0x305].copy_from_slice(b"hello");
        let mut load = |addr: u64, size: u32| -> Result<u64, Fault> {
            let a = addr as usize;
            let mut b = [0u8; 8];
            b[..size as usize].copy_from_slice(&mem[a..a + size as usize]);
            Ok(u64::from_le_bytes(b))
        };
        format(&mut load, 0x100, 0x200).unwrap()
    }

    fn pack(parts: &[(&[u8], usize)]) -> Vec<u8> {
        let mut v = Vec::new();
        for (bytes, align) in parts {
            while v.len() % align != 0 {
                v.push(0);
            }
            v.extend_from_slice(bytes);
        }
        v
    }

    #[test]
    fn conversions_follow_c() {
        let a = pack(&[
            (&(-42i32).to_le_bytes(), 4),
            (&7u32.to_le_bytes(), 4),
            (&1.5f64.to_le_bytes(), 8),
            (&0x300u64.to_le_bytes(), 8),
            (&(-3i64).to_le_bytes(), 8),
        ]);
        assert_eq!(run("%d %05u %.2f %s %ld%%", &a), "-42 00007 1.50 hello -3%");
        let b = pack(&[
            (&255u32.to_le_bytes(), 4),
            (&255u32.to_le_bytes(), 4),
            (&1234.5f64.to_le_bytes(), 8),
        ]);
        assert_eq!(run("[%#x|%-6X|%e]", &b), "[0xff|FF    |1.234500e+03]");
        let c = pack(&[
            (&0.0001f64.to_le_bytes(), 8),
            (&100000.0f64.to_le_bytes(), 8),
        ]);
        assert_eq!(run("%g %g", &c), "0.0001 100000");
        let d = pack(&[
            (&1e-5f64.to_le_bytes(), 8),
            (&(b'Z' as u32).to_le_bytes(), 4),
        ]);
        assert_eq!(
            run("%g %c %+d", &[d, 5i32.to_le_bytes().to_vec()].concat()),
            "1e-05 Z +5"
        );
    }

    /// A hostile format cannot make the device allocate or loop without bound.
    #[test]
    fn huge_widths_and_precisions_are_capped() {
        let a = pack(&[(&1u32.to_le_bytes(), 4), (&1.0f64.to_le_bytes(), 8)]);
        let s = run("%99999999999999999999d%.99999999999999999999f", &a);
        assert_eq!(s.len(), MAX_FIELD + 2 + MAX_FIELD);
    }
}
