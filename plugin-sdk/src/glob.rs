//! The glob `broker.list` takes, the same for every adapter.

/// Whether `name` matches `pattern`, where `*` stands for any run of characters and `?` for one.
/// It backtracks only to the last `*`, so a pattern of many stars stays linear per star.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn stars_and_question_marks() {
        assert!(glob("*.dlq", "orders.dlq"));
        assert!(glob("orders.*", "orders.dlq"));
        assert!(glob("o?ders*", "orders.dlq"));
        assert!(glob("*", ""));
        assert!(!glob("*.dlq", "orders.dlq.parking"));
        assert!(!glob("?", ""));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
    }

    #[test]
    fn many_stars_stay_fast() {
        let name = "a".repeat(5_000);
        assert!(!glob(&format!("{}b", "a*".repeat(50)), &name));
    }
}
