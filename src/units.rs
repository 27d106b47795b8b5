//! Human units for byte counts, shared by the one-line pass summary and the reports. A
//! leaf: it imports nothing from the crate, so any layer may use it.

const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];

/// `n` in its unit: the value and the unit's index in [`UNITS`] (0: bytes, `n` itself).
fn scaled(n: u64) -> (f64, usize) {
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    (v, u)
}

/// Bytes in binary units (B, KiB, MiB, GiB, TiB) with one decimal above bytes.
pub fn human_bytes(n: u64) -> String {
    let mut s = String::new();
    write_human_bytes(&mut s, n).expect("a String takes any text");
    s
}

/// [`human_bytes`] written to `out`, without a string of its own (a report's table writes
/// hundreds of thousands).
pub fn write_human_bytes(out: &mut impl std::fmt::Write, n: u64) -> std::fmt::Result {
    let (_, u) = scaled(n);
    if u == 0 {
        out.write_str(itoa::Buffer::new().format(n))?;
        return out.write_str(" B");
    }
    let tenths = tenths(n, u);
    out.write_str(itoa::Buffer::new().format(tenths / 10))?;
    out.write_char('.')?;
    out.write_char(char::from(b'0' + (tenths % 10) as u8))?;
    out.write_char(' ')?;
    out.write_str(UNITS[u])
}

/// `n` in unit `u` (1 or more) in tenths, rounded as `format!("{:.1}")` rounds the value
/// [`scaled`] gives: `n` as an `f64` (rounded to 53 bits above 2^53) over 1024^u, which
/// is exact, and its exact tenths rounded to the nearest, ties to the even one. In
/// integers, without the float formatting machinery (a table of a year of days writes
/// hundreds of thousands).
fn tenths(n: u64, u: usize) -> u64 {
    let m = n as f64 as u128;
    let shift = 10 * u as u32;
    let scaled = 10 * m;
    let (q, r, half) = (
        scaled >> shift,
        scaled & ((1 << shift) - 1),
        1 << (shift - 1),
    );
    // At most 10 (2^64 - 1) / 1024 + 1: it fits.
    let q = q as u64;
    match r > half || (r == half && q % 2 == 1) {
        true => q + 1,
        false => q,
    }
}

/// Decimal digits of `n`.
pub fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |l| l as usize + 1)
}

/// The length of [`human_bytes`]`(n)` (ASCII: bytes are characters), without formatting
/// it but near a power of ten, where the one decimal may round up to one more digit.
pub fn human_bytes_width(n: u64) -> usize {
    let (v, u) = scaled(n);
    if u == 0 {
        return digits(n) + " B".len();
    }
    // v >= 1: its whole part's digits, unless v is within 0.05 of the next power of ten
    // (rounded to one decimal it would have one more). Short of it by 0.1 or more, float
    // error cannot matter; closer, the width is counted from the text itself.
    let whole = digits(v as u64);
    if v + 0.1 < 10f64.powi(whole as i32) {
        return whole + ".0 ".len() + UNITS[u].len();
    }
    struct Count(usize);
    impl std::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut c = Count(0);
    write_human_bytes(&mut c, n).expect("counting cannot fail");
    c.0
}

#[cfg(test)]
mod tests {
    use super::{digits, human_bytes, human_bytes_width};

    #[test]
    fn binary_units_with_one_decimal() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
        assert_eq!(human_bytes(3 << 50), "3072.0 TiB");
    }

    /// The text as `format!` writes the scaled float (as before issue 26), at every tie
    /// of a tenth in every unit, around them and at random.
    #[test]
    fn human_bytes_are_the_float_formatting_to_the_byte() {
        let reference = |n: u64| match super::scaled(n) {
            (_, 0) => format!("{n} B"),
            (v, u) => format!("{v:.1} {}", super::UNITS[u]),
        };
        let mut ns: Vec<u64> = vec![0, 1, 1023, 1024, u64::MAX, u64::MAX - 1, 1 << 53];
        // A tenth's tie in unit u is an odd multiple of 1024^u / 20's power-of-two part,
        // 2^(10u - 2): n = 2^(10u - 2) (2j + 1), with its neighbours.
        for u in 1..=4u32 {
            for j in (0..3000u64).chain((1 << 20)..(1 << 20) + 100) {
                let n = (1u64 << (10 * u - 2)).saturating_mul(2 * j + 1);
                ns.extend([n - 1, n, n.saturating_add(1)]);
            }
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..300_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ns.push(x >> (x % 64));
        }
        for n in ns {
            assert_eq!(human_bytes(n), reference(n), "{n}");
        }
    }

    #[test]
    fn digits_and_widths_are_the_texts() {
        for n in [0, 1, 9, 10, 99, 100, 999_999, u64::MAX] {
            assert_eq!(digits(n), n.to_string().len(), "{n}");
        }
        // Every power of two and its neighbours, the edges of every unit and of every
        // power of ten within it (where one decimal rounds up to another digit), and a
        // spread of others.
        let mut ns: Vec<u64> = vec![0, u64::MAX, u64::MAX - 1];
        for shift in 0..64 {
            let p = 1u64 << shift;
            ns.extend([p - 1, p, p + 1]);
        }
        for unit in [1u64, 1 << 10, 1 << 20, 1 << 30, 1 << 40] {
            for edge in [1u64, 10, 100, 1000, 1024] {
                let at = (edge as f64 * unit as f64) as u64;
                let step = (unit / 100).max(1);
                for k in 0..200 {
                    ns.push(at.saturating_sub(step * 100).saturating_add(step * k));
                    ns.push(at.saturating_sub(100).saturating_add(k));
                }
            }
        }
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ns.push(x >> (x % 64));
        }
        for n in ns {
            assert_eq!(
                human_bytes_width(n),
                human_bytes(n).len(),
                "{n}: {}",
                human_bytes(n)
            );
        }
    }
}
