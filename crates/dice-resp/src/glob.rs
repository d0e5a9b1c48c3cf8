//! Redis's glob patterns, for `KEYS` and `SCAN ... MATCH`.
//!
//! `*` matches any run of bytes, `?` one byte, `[abc]` one of a set, `[^abc]` one byte not in
//! it, `[a-z]` a range (`[z-a]` too), and `\x` the byte `x` literally, inside a set or out of
//! it. Every corner follows Redis's `stringmatchlen` (an unclosed `[` runs to the end of the
//! pattern; `]` right after `[` closes an empty set), but the matching is iterative, with one
//! backtracking point, so no pattern can make it recurse deeply or take exponential time.

/// Whether `text` matches the glob `pattern`.
///
/// ```
/// use dice_resp::glob::glob_match;
/// assert!(glob_match(b"user:*", b"user:42"));
/// assert!(glob_match(b"h?llo", b"hallo"));
/// assert!(glob_match(b"h[ae]llo", b"hello"));
/// assert!(!glob_match(b"h[^e]llo", b"hello"));
/// assert!(glob_match(b"h[a-b]llo", b"hbllo"));
/// assert!(glob_match(b"a\\*b", b"a*b"));
/// assert!(!glob_match(b"a\\*b", b"axb"));
/// ```
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: the pattern just past it, and the text position
    // it is currently assumed to stretch to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            if pattern[p] == b'*' {
                while p < pattern.len() && pattern[p] == b'*' {
                    p += 1;
                }
                if p == pattern.len() {
                    return true;
                }
                star = Some((p, t));
                continue;
            }
            if let Some(next) = match_one(pattern, p, text[t]) {
                p = next;
                t += 1;
                continue;
            }
        }
        // Mismatch: let the last star swallow one more byte.
        match star {
            Some((sp, st)) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

/// Matches the single-byte token at `pattern[p]` (anything but `*`) against `c`: the
/// position after the token if it matches.
fn match_one(pattern: &[u8], mut p: usize, c: u8) -> Option<usize> {
    let len = pattern.len();
    match pattern[p] {
        b'?' => Some(p + 1),
        b'[' => {
            p += 1;
            let negate = p < len && pattern[p] == b'^';
            if negate {
                p += 1;
            }
            let mut matched = false;
            loop {
                if p >= len {
                    // Unclosed: the set runs to the end of the pattern.
                    p = len - 1;
                    break;
                } else if pattern[p] == b'\\' && len - p >= 2 {
                    p += 1;
                    matched |= pattern[p] == c;
                } else if pattern[p] == b']' {
                    break;
                } else if len - p >= 3 && pattern[p + 1] == b'-' {
                    let (a, b) = (pattern[p], pattern[p + 2]);
                    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                    matched |= (lo..=hi).contains(&c);
                    p += 2;
                } else {
                    matched |= pattern[p] == c;
                }
                p += 1;
            }
            (matched != negate).then_some(p + 1)
        }
        b'\\' if len - p >= 2 => (pattern[p + 1] == c).then_some(p + 2),
        literal => (literal == c).then_some(p + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A direct port of Redis's recursive `stringmatchlen` (without its early-exit
    /// optimisation, which does not change results), as the reference.
    fn redis_match(pattern: &[u8], string: &[u8]) -> bool {
        let at = |s: &[u8], i: usize| s.get(i).copied().unwrap_or(0);
        let (mut p, mut s) = (0usize, 0usize);
        let (plen, slen) = (pattern.len(), string.len());
        while p < plen && s < slen {
            match pattern[p] {
                b'*' => {
                    while p + 1 < plen && pattern[p + 1] == b'*' {
                        p += 1;
                    }
                    if p + 1 == plen {
                        return true;
                    }
                    while s < slen {
                        if redis_match(&pattern[p + 1..], &string[s..]) {
                            return true;
                        }
                        s += 1;
                    }
                    return false;
                }
                b'?' => s += 1,
                b'[' => {
                    p += 1;
                    let not = at(pattern, p) == b'^';
                    if not {
                        p += 1;
                    }
                    let mut matched = false;
                    loop {
                        if at(pattern, p) == b'\\' && plen - p >= 2 {
                            p += 1;
                            if pattern[p] == string[s] {
                                matched = true;
                            }
                        } else if at(pattern, p) == b']' {
                            break;
                        } else if p >= plen {
                            p -= 1;
                            break;
                        } else if plen - p >= 3 && pattern[p + 1] == b'-' {
                            let (mut a, mut b) = (pattern[p], pattern[p + 2]);
                            if a > b {
                                std::mem::swap(&mut a, &mut b);
                            }
                            p += 2;
                            if string[s] >= a && string[s] <= b {
                                matched = true;
                            }
                        } else if pattern[p] == string[s] {
                            matched = true;
                        }
                        p += 1;
                    }
                    if not {
                        matched = !matched;
                    }
                    if !matched {
                        return false;
                    }
                    s += 1;
                }
                c => {
                    let c = if c == b'\\' && plen - p >= 2 {
                        p += 1;
                        pattern[p]
                    } else {
                        c
                    };
                    if c != string[s] {
                        return false;
                    }
                    s += 1;
                }
            }
            p += 1;
            if s == slen {
                while at(pattern, p) == b'*' {
                    p += 1;
                }
                break;
            }
        }
        p >= plen && s == slen
    }

    #[test]
    fn examples() {
        let yes: &[(&[u8], &[u8])] = &[
            (b"*", b"anything"),
            (b"**", b"x"),
            (b"a*", b"a"),
            (b"a*b*c", b"aXbYc"),
            (b"a*b*c", b"abbbc"),
            (b"*c", b"abc"),
            (b"?", b"x"),
            (b"[abc]", b"b"),
            (b"[^abc]", b"d"),
            (b"[a-c]x", b"bx"),
            (b"[c-a]x", b"bx"),
            (b"[\\]]", b"]"),
            (b"[\\-]", b"-"),
            (b"\\?", b"?"),
            (b"\\\\", b"\\"),
            (b"ab\\", b"ab\\"),
            (b"[abc", b"c"),
            (b"[^]x]", b"yx]"),
            (b"user:[0-9]*", b"user:1abc"),
        ];
        let no: &[(&[u8], &[u8])] = &[
            (b"a", b"b"),
            (b"a*b", b"ac"),
            (b"?", b"xy"),
            (b"[abc]", b"d"),
            (b"[^abc]", b"a"),
            (b"\\?", b"x"),
            (b"a", b"aa"),
            (b"aa", b"a"),
            (b"[]x]", b"]"),
            (b"[]x]", b"x"),
            (b"[]x]", b"x]"),
        ];
        for (p, t) in yes {
            assert!(glob_match(p, t), "{:?} should match {:?}", p, t);
            assert!(redis_match(p, t), "reference: {:?} / {:?}", p, t);
        }
        for (p, t) in no {
            assert!(!glob_match(p, t), "{:?} should not match {:?}", p, t);
            assert!(!redis_match(p, t), "reference: {:?} / {:?}", p, t);
        }
    }

    #[test]
    fn no_blowup() {
        let text = vec![b'a'; 1000];
        let mut pattern = b"a*".repeat(40);
        pattern.push(b'b');
        assert!(!glob_match(&pattern, &text));
    }

    fn alphabet() -> impl Strategy<Value = u8> {
        prop::sample::select(b"ab*?[]^-\\".to_vec())
    }

    proptest! {
        /// Same answers as Redis's own algorithm, on patterns dense in special characters.
        /// (Texts are non-empty: dice keys cannot be empty, and on the empty text Redis's
        /// `stringmatchlen` answers no even for `*`.)
        #[test]
        fn agrees_with_redis(
            pattern in prop::collection::vec(alphabet(), 0..10),
            text in prop::collection::vec(alphabet(), 1..10),
        ) {
            prop_assert_eq!(glob_match(&pattern, &text), redis_match(&pattern, &text),
                "pattern {:?} text {:?}", String::from_utf8_lossy(&pattern), String::from_utf8_lossy(&text));
        }
    }
}
