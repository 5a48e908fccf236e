//! Which kernel variant runs the quantized products: the best this CPU has (`auto`), or one
//! forced by name (`--kernel`, the sweep's `kernel` axis), so that one machine measures every
//! tier it has — what AVX2 gives against AVX-512 VNNI on a host, what i8mm buys over dotprod
//! on a phone — and the quality of a level can be checked on each path.
//!
//! The choice belongs to a [`crate::backend::Runtime`]: its pool's workers carry it in a
//! thread-local variable, read once per product, so two runtimes in one process (tests) do not
//! see each other's choice.

use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::fmt;

/// A kernel variant by its name in results (the `kernel` column), or `auto`.
///
/// The names are known on every host (a controller plans cells for phones of another
/// architecture); whether a CPU has one is [`KernelTier::check_here`] on that CPU.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub enum KernelTier {
    /// The best variant this CPU has.
    #[default]
    Auto,
    /// Scalar code, any CPU: the reference.
    Portable,
    /// AVX2 with FMA and F16C (`vpmaddubsw` row tiles).
    X86Avx2,
    /// AVX-512 with VNNI (`vpdpbusd` row tiles).
    X86Avx512Vnni,
    /// Baseline NEON (every arm64 CPU).
    ArmNeon,
    /// `sdot` (FEAT_DotProd).
    ArmDotprod,
    /// `smmla` (FEAT_I8MM).
    ArmI8mm,
}

impl KernelTier {
    /// Every value, `auto` first, then the variants from the slowest.
    pub const ALL: [Self; 7] = [
        Self::Auto,
        Self::Portable,
        Self::X86Avx2,
        Self::X86Avx512Vnni,
        Self::ArmNeon,
        Self::ArmDotprod,
        Self::ArmI8mm,
    ];

    /// The name: `auto`, or the variant's name in the `kernel` column.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Portable => "portable",
            Self::X86Avx2 => "x86-avx2",
            Self::X86Avx512Vnni => "x86-avx512vnni",
            Self::ArmNeon => "arm-neon",
            Self::ArmDotprod => "arm-dotprod",
            Self::ArmI8mm => "arm-i8mm",
        }
    }

    /// Parses a name; the error lists the valid ones.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let valid: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
                format!("`{s}` is not a kernel (valid: {})", valid.join(", "))
            })
    }

    /// Whether the CPU this runs on has this variant (`auto` and `portable`: always), and
    /// if not, why: what it has instead.
    pub fn check_here(self) -> Result<(), String> {
        let have = super::kernel_names();
        if self == Self::Auto || have.contains(&self.name()) {
            return Ok(());
        }
        Err(format!(
            "kernel `{}` needs a CPU feature this {} CPU lacks (it has: {})",
            self.name(),
            std::env::consts::ARCH,
            have.join(", ")
        ))
    }

    /// Whether `names` (a device's `kernels`, from its agent) include this variant, and if
    /// not, why.
    pub fn check_on(self, device: &str, names: &[String]) -> Result<(), String> {
        if self == Self::Auto || names.iter().any(|n| n == self.name()) {
            return Ok(());
        }
        Err(format!(
            "kernel `{}` is not on {device}'s CPU (it has: {})",
            self.name(),
            names.join(", ")
        ))
    }
}

impl fmt::Display for KernelTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KernelTier {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl From<KernelTier> for String {
    fn from(k: KernelTier) -> Self {
        k.name().to_owned()
    }
}

impl TryFrom<String> for KernelTier {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

thread_local! {
    /// The variant the products on this thread run (a runtime's pool workers set it).
    static FORCED: Cell<KernelTier> = const { Cell::new(KernelTier::Auto) };
}

/// Makes the calling thread's products run `tier` (a [`crate::backend::Runtime`]'s workers
/// call it when they start).
pub(crate) fn set_thread_tier(tier: KernelTier) {
    FORCED.with(|f| f.set(tier));
}

/// The variant the calling thread's products run.
pub(crate) fn thread_tier() -> KernelTier {
    FORCED.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_ones_list_the_valid() {
        for k in KernelTier::ALL {
            assert_eq!(KernelTier::parse(k.name()), Ok(k));
            let json = serde_json::to_string(&k).expect("serializes");
            assert_eq!(json, format!("\"{}\"", k.name()));
            assert_eq!(serde_json::from_str::<KernelTier>(&json).ok(), Some(k));
        }
        let err = KernelTier::parse("avx3").unwrap_err();
        assert!(
            err.contains("`avx3`") && err.contains("x86-avx2, x86-avx512vnni"),
            "{err}"
        );
    }

    #[test]
    fn this_cpu_has_auto_portable_and_what_it_lists_and_refuses_the_rest() {
        let have = super::super::kernel_names();
        for k in KernelTier::ALL {
            let here = k.check_here();
            let listed = k == KernelTier::Auto || have.contains(&k.name());
            assert_eq!(here.is_ok(), listed, "{k}: {here:?}");
            if let Err(e) = here {
                assert!(e.contains(k.name()) && e.contains("portable"), "{e}");
            }
        }
        let names = vec!["portable".to_owned(), "arm-dotprod".to_owned()];
        assert!(KernelTier::ArmDotprod.check_on("phone1", &names).is_ok());
        let err = KernelTier::ArmI8mm.check_on("phone1", &names).unwrap_err();
        assert!(
            err.contains("phone1") && err.contains("arm-dotprod"),
            "{err}"
        );
    }
}
