//! The synthetic workload: record sizes and keys.

use std::str::FromStr;

use kinesis_producer::{HashKey, UserRecord};
use serde::Serialize;

/// A record-size distribution, in bytes of data.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SizeDist {
    Fixed { bytes: usize },
    Uniform { min: usize, max: usize },
    Lognormal { median: f64, sigma: f64 },
}

/// The largest data a record of the bench can carry: 1 MiB less its 16-byte key.
pub(super) const MAX_DATA: usize = (1 << 20) - 16;

impl FromStr for SizeDist {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, params) = s.split_once(':').unwrap_or(("fixed", s));
        let num = |t: &str| {
            t.trim()
                .parse::<f64>()
                .map_err(|_| format!("{t:?} is not a number (in size distribution {s:?})"))
        };
        let bytes = |t: &str| -> Result<usize, String> {
            let v = num(t)?;
            if v < 1.0 || v > MAX_DATA as f64 || v.fract() != 0.0 {
                return Err(format!(
                    "record size {t} is out of range: a whole number of bytes from 1 to {MAX_DATA}"
                ));
            }
            Ok(v as usize)
        };
        match kind {
            "fixed" => Ok(SizeDist::Fixed {
                bytes: bytes(params)?,
            }),
            "uniform" => {
                let (a, b) = params
                    .split_once('-')
                    .ok_or_else(|| format!("uniform needs MIN-MAX, found {params:?}"))?;
                let (min, max) = (bytes(a)?, bytes(b)?);
                if min > max {
                    return Err(format!("uniform:{min}-{max}: MIN is above MAX"));
                }
                Ok(SizeDist::Uniform { min, max })
            }
            "lognormal" => {
                let (m, sigma) = params.split_once(':').unwrap_or((params, "1.0"));
                let (median, sigma) = (bytes(m)? as f64, num(sigma)?);
                if !(0.0..=4.0).contains(&sigma) {
                    return Err(format!("lognormal sigma {sigma} is out of range 0 to 4"));
                }
                Ok(SizeDist::Lognormal { median, sigma })
            }
            other => Err(format!(
                "unknown size distribution {other:?}: use fixed:N, uniform:MIN-MAX or lognormal:MEDIAN[:SIGMA]"
            )),
        }
    }
}

impl SizeDist {
    fn sample(&self, rng: &mut fastrand::Rng) -> usize {
        match *self {
            SizeDist::Fixed { bytes } => bytes,
            SizeDist::Uniform { min, max } => rng.usize(min..=max),
            SizeDist::Lognormal { median, sigma } => {
                // Box-Muller: a standard normal from two uniforms.
                let (u1, u2) = (1.0 - rng.f64(), rng.f64());
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                ((median * (sigma * z).exp()).round() as usize).clamp(1, MAX_DATA)
            }
        }
    }
}

impl std::fmt::Display for SizeDist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            SizeDist::Fixed { bytes } => write!(f, "fixed:{bytes}"),
            SizeDist::Uniform { min, max } => write!(f, "uniform:{min}-{max}"),
            SizeDist::Lognormal { median, sigma } => write!(f, "lognormal:{median}:{sigma}"),
        }
    }
}

/// The synthetic workload: deterministic for a seed.
pub(super) struct Workload {
    pub(super) rng: fastrand::Rng,
    pub(super) size: SizeDist,
    pub(super) keys: u64,
    pub(super) ehk_share: f64,
}

impl Workload {
    pub(super) fn next(&mut self) -> UserRecord {
        let size = self.size.sample(&mut self.rng);
        let mut data = vec![0u8; size];
        self.rng.fill(&mut data);
        let key = format!("partition-{:06}", self.rng.u64(..self.keys));
        let record = UserRecord::new(key, data).expect("sizes and keys are checked up front");
        if self.ehk_share > 0.0 && self.rng.f64() < self.ehk_share {
            record.with_explicit_hash_key(HashKey(self.rng.u128(..)))
        } else {
            record
        }
    }
}
