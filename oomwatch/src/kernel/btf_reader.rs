//! A small reader of raw BTF (the format of `/sys/kernel/btf/vmlinux`):
//! the file's bytes plus one index entry (4 bytes) per type, nothing else.
//!
//! Why not a crate: btf-rs and aya both turn every one of the kernel's
//! ~150,000 types into an owned Rust value (with a Vec per struct), which
//! took the daemon's peak RSS from 13 to 44 MiB at start for the dozen
//! types it reads. Here a lookup walks the bytes; every read is
//! length-checked and a malformed file is an error, never a panic
//! (fuzzed: `tests/fuzz/fuzz_targets/btf.rs`).

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const TYPE_LEN: usize = 12;
/// How deep a chain of typedefs and qualifiers may go before it is refused.
const MAX_CHAIN: usize = 16;

/// BTF kinds (`BTF_KIND_*` in include/uapi/linux/btf.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Int = 1,
    Ptr = 2,
    Array = 3,
    Struct = 4,
    Union = 5,
    Enum = 6,
    Fwd = 7,
    Typedef = 8,
    Volatile = 9,
    Const = 10,
    Restrict = 11,
    Func = 12,
    FuncProto = 13,
    Var = 14,
    DataSec = 15,
    Float = 16,
    DeclTag = 17,
    TypeTag = 18,
    Enum64 = 19,
}

impl Kind {
    fn from_raw(k: u32) -> Option<Self> {
        use Kind::*;
        Some(match k {
            1 => Int,
            2 => Ptr,
            3 => Array,
            4 => Struct,
            5 => Union,
            6 => Enum,
            7 => Fwd,
            8 => Typedef,
            9 => Volatile,
            10 => Const,
            11 => Restrict,
            12 => Func,
            13 => FuncProto,
            14 => Var,
            15 => DataSec,
            16 => Float,
            17 => DeclTag,
            18 => TypeTag,
            19 => Enum64,
            _ => return None,
        })
    }

    /// Bytes that follow the 12-byte common part, for `vlen` entries.
    fn trailing(self, vlen: usize) -> usize {
        use Kind::*;
        match self {
            Int | Var | DeclTag => 4,
            Array => 12,
            Struct | Union | DataSec | Enum64 => 12 * vlen,
            Enum | FuncProto => 8 * vlen,
            Ptr | Fwd | Typedef | Volatile | Const | Restrict | Func | Float | TypeTag => 0,
        }
    }
}

/// One type: its common part and the bytes after it.
#[derive(Clone, Copy, Debug)]
pub struct Type<'a> {
    pub id: u32,
    pub kind: Kind,
    pub name_off: u32,
    pub vlen: usize,
    pub kind_flag: bool,
    /// `size` or `type`, depending on the kind.
    pub size_or_type: u32,
    rest: &'a [u8],
}

/// A struct or union member, a function parameter, an enum value.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub name_off: u32,
    /// Member or parameter type; the value (low 32 bits) of an enum entry.
    pub value: u32,
    /// Member bit offset (0 for other entries).
    pub bit_offset: u32,
}

impl Type<'_> {
    /// Members, parameters or enum values, as this kind lays them out.
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        let (stride, is_member) = match self.kind {
            Kind::Struct | Kind::Union => (12, true),
            Kind::Enum | Kind::FuncProto => (8, false),
            Kind::Enum64 => (12, false),
            _ => (0, false),
        };
        let n = if stride == 0 { 0 } else { self.vlen };
        let flag = self.kind_flag;
        (0..n).filter_map(move |i| {
            let at = i * stride;
            let name_off = u32_at(self.rest, at)?;
            let value = u32_at(self.rest, at + 4)?;
            let bit_offset = if is_member {
                let raw = u32_at(self.rest, at + 8)?;
                // kind_flag: the top 8 bits are a bitfield's size.
                if flag { raw & 0x00ff_ffff } else { raw }
            } else {
                0
            };
            Some(Entry {
                name_off,
                value,
                bit_offset,
            })
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("shorter than a BTF header ({0} bytes)")]
    Short(usize),
    #[error("bad magic {0:#06x} (not BTF, or another byte order)")]
    Magic(u16),
    #[error("{what} ({start}+{len}) is outside the {size}-byte file")]
    Section {
        what: &'static str,
        start: usize,
        len: usize,
        size: usize,
    },
    #[error("type {id} at byte {at}: {reason}")]
    Type { id: u32, at: usize, reason: String },
}

/// Raw BTF with an index of where each type starts.
pub struct Btf {
    data: Vec<u8>,
    types: std::ops::Range<usize>,
    strings: std::ops::Range<usize>,
    /// Offset in `data` of type id `i + 1` (id 0 is `void`).
    starts: Vec<u32>,
}

impl Btf {
    pub fn parse(data: Vec<u8>) -> Result<Self, ParseError> {
        if data.len() < HEADER_LEN {
            return Err(ParseError::Short(data.len()));
        }
        let field = |at| u32_at(&data, at).unwrap_or(0) as usize;
        let magic = u16::from_ne_bytes([data[0], data[1]]);
        if magic != MAGIC {
            return Err(ParseError::Magic(magic));
        }
        let hdr_len = field(4);
        let section = |what, off: usize, len: usize| {
            let start = hdr_len.checked_add(off);
            match start.and_then(|s| s.checked_add(len)) {
                Some(end) if end <= data.len() && hdr_len >= HEADER_LEN => {
                    Ok(start.unwrap_or(0)..end)
                }
                _ => Err(ParseError::Section {
                    what,
                    start: hdr_len.saturating_add(off),
                    len,
                    size: data.len(),
                }),
            }
        };
        let types = section("type section", field(8), field(12))?;
        let strings = section("string section", field(16), field(20))?;
        let starts = index(&data, types.clone())?;
        Ok(Self {
            data,
            types,
            strings,
            starts,
        })
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Type `id` (1-based; 0 is void and has no record).
    pub fn get(&self, id: u32) -> Option<Type<'_>> {
        let at = *self.starts.get((id as usize).checked_sub(1)?)? as usize;
        let end = self.types.end;
        let info = u32_at(&self.data[..end], at + 4)?;
        let kind = Kind::from_raw((info >> 24) & 0x1f)?;
        let vlen = (info & 0xffff) as usize;
        let rest_start = at + TYPE_LEN;
        let rest = self.data[..end].get(rest_start..rest_start + kind.trailing(vlen))?;
        Some(Type {
            id,
            kind,
            name_off: u32_at(&self.data, at)?,
            vlen,
            kind_flag: info >> 31 == 1,
            size_or_type: u32_at(&self.data, at + 8)?,
            rest,
        })
    }

    /// The string at `off` in the string section (up to its NUL); None
    /// when out of the section, unterminated or not UTF-8.
    pub fn name(&self, off: u32) -> Option<&str> {
        let section = self.data.get(self.strings.clone())?;
        let tail = section.get(off as usize..)?;
        let len = memchr::memchr(0, tail)?;
        std::str::from_utf8(&tail[..len]).ok()
    }

    /// Every type of `kind` named `name`, in id order.
    pub fn named<'a, 'n>(
        &'a self,
        name: &'n str,
        kind: Kind,
    ) -> impl Iterator<Item = Type<'a>> + use<'a, 'n> {
        (1..=self.starts.len() as u32)
            .filter_map(|id| self.get(id))
            .filter(move |t| t.kind == kind && self.name(t.name_off) == Some(name))
    }

    /// The type `id` refers to, through typedefs and qualifiers.
    pub fn resolve(&self, mut id: u32) -> Option<Type<'_>> {
        for _ in 0..MAX_CHAIN {
            let t = self.get(id)?;
            match t.kind {
                Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag => {
                    id = t.size_or_type
                }
                _ => return Some(t),
            }
        }
        None
    }
}

/// Where each type starts; refuses a type that runs past the section or a
/// kind this reader does not know (its length would be a guess).
fn index(data: &[u8], types: std::ops::Range<usize>) -> Result<Vec<u32>, ParseError> {
    let mut starts = Vec::with_capacity((types.end - types.start) / 20);
    let mut at = types.start;
    while at < types.end {
        let id = starts.len() as u32 + 1;
        let bad = |reason: String| ParseError::Type { id, at, reason };
        if at + TYPE_LEN > types.end {
            return Err(bad("truncated".into()));
        }
        let info = u32_at(data, at + 4).ok_or_else(|| bad("truncated".into()))?;
        let raw_kind = (info >> 24) & 0x1f;
        let kind =
            Kind::from_raw(raw_kind).ok_or_else(|| bad(format!("unknown kind {raw_kind}")))?;
        let next = at + TYPE_LEN + kind.trailing((info & 0xffff) as usize);
        if next > types.end {
            return Err(bad(format!("{kind:?} runs past the type section")));
        }
        starts.push(u32::try_from(at).map_err(|_| bad("offset over 4 GiB".into()))?);
        at = next;
    }
    starts.shrink_to_fit();
    Ok(starts)
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob from raw type records and a string section.
    pub(crate) fn blob(types: &[u32], strings: &[u8]) -> Vec<u8> {
        let type_len = (types.len() * 4) as u32;
        let mut out = Vec::new();
        for w in [
            u32::from(MAGIC) | (1 << 16),
            HEADER_LEN as u32,
            0,
            type_len,
            type_len,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_ne_bytes());
        }
        for w in types {
            out.extend_from_slice(&w.to_ne_bytes());
        }
        out.extend_from_slice(strings);
        out
    }

    fn info(kind: Kind, vlen: u32, flag: bool) -> u32 {
        ((kind as u32) << 24) | vlen | (u32::from(flag) << 31)
    }

    #[test]
    fn struct_members_and_bitfield_offsets() {
        // [1] int; [2] struct s { int a; int b:3 @ bit 36 } with kind_flag.
        let strings = b"\0int\0s\0a\0b\0";
        let types = [
            1,
            info(Kind::Int, 0, false),
            4,
            32,
            5,
            info(Kind::Struct, 2, true),
            8,
            7,
            1,
            0,
            9,
            1,
            (3 << 24) | 36,
        ];
        let btf = Btf::parse(blob(&types, strings)).unwrap();
        assert_eq!(btf.len(), 2);
        let s = btf.named("s", Kind::Struct).next().unwrap();
        let m: Vec<_> = s
            .entries()
            .map(|e| (btf.name(e.name_off).unwrap().to_owned(), e.bit_offset))
            .collect();
        assert_eq!(m, [("a".to_owned(), 0), ("b".to_owned(), 36)]);
        assert_eq!(btf.resolve(1).unwrap().kind, Kind::Int);
    }

    #[test]
    fn truncated_and_unknown_kinds_are_errors() {
        let strings = b"\0s\0";
        // A struct claiming 5 members with room for none.
        assert!(matches!(
            Btf::parse(blob(&[1, info(Kind::Struct, 5, false), 8], strings)),
            Err(ParseError::Type { .. })
        ));
        assert!(matches!(
            Btf::parse(blob(&[1, 30 << 24, 0], strings)),
            Err(ParseError::Type { .. })
        ));
        assert!(matches!(
            Btf::parse(vec![0x9f, 0xeb, 1, 0]),
            Err(ParseError::Short(4))
        ));
        let mut bad_section = blob(&[], strings);
        bad_section[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(matches!(
            Btf::parse(bad_section),
            Err(ParseError::Section { .. })
        ));
    }

    #[test]
    fn a_typedef_loop_resolves_to_nothing() {
        let btf = Btf::parse(blob(&[0, info(Kind::Typedef, 0, false), 1], b"\0")).unwrap();
        assert!(btf.resolve(1).is_none());
        assert!(btf.name(99).is_none());
    }
}
