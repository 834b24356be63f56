//! Logistic regression as a resource graph (the paper's §6.1.1, after Cirrus):
//! load → split into training and validation → train → validate.
//!
//! The data set is synthetic and deterministic: rows of `features` f32
//! features and one f32 label (0 or 1), drawn from a seeded generator around
//! a hidden separating hyperplane with noise. Every piece streams its data
//! through its memory components in chunks, so its own memory stays small.

use super::{decode, encode};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resc_core::runtime::{Channel, CodeError, Context};
use resc_core::sandbox::CodeRegistry;
use serde::{Deserialize, Serialize};

/// Most features a row may have, so that rows and chunks stay small.
const MAX_FEATURES: u32 = 4096;
/// Largest chunk a piece reads or writes at once.
const MAX_CHUNK_BYTES: u32 = 64 << 20;

/// The invocation's input: what to generate and how to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrJob {
    /// Size of the data set in bytes.
    pub input_bytes: u64,
    /// Features per row (each row also carries a label).
    pub features: u32,
    /// Passes over the training set.
    pub epochs: u32,
    /// Gradient step size.
    pub learning_rate: f32,
    /// Share of rows held out for validation, in percent.
    pub validation_percent: u32,
    /// Seed of the data set.
    pub seed: u64,
    /// Bytes each piece reads or writes at a time.
    pub chunk_bytes: u32,
}

impl LrJob {
    /// A job over `input_bytes` of data with the demo's defaults.
    pub fn new(input_bytes: u64) -> Self {
        LrJob {
            input_bytes,
            features: 31,
            epochs: 100,
            learning_rate: 0.5,
            validation_percent: 20,
            seed: 42,
            chunk_bytes: 1 << 20,
        }
    }

    fn row_bytes(&self) -> usize {
        (self.features as usize + 1) * 4
    }

    fn rows(&self) -> u64 {
        self.input_bytes / self.row_bytes() as u64
    }

    /// Rows per chunk (at least one).
    fn chunk_rows(&self) -> usize {
        (self.chunk_bytes as usize / self.row_bytes()).max(1)
    }

    fn validation_rows(&self) -> u64 {
        // In u128: rows × percent may not fit in u64 for absurd inputs.
        (u128::from(self.rows()) * u128::from(self.validation_percent.min(100)) / 100) as u64
    }

    fn check(&self, component: &str) -> Result<(), CodeError> {
        if self.features > MAX_FEATURES || self.chunk_bytes > MAX_CHUNK_BYTES {
            return Err(CodeError::failed(format!(
                "{component}: at most {MAX_FEATURES} features and {MAX_CHUNK_BYTES}-byte chunks (got {} and {})",
                self.features, self.chunk_bytes
            )));
        }
        if self.features == 0
            || self.rows() == 0
            || self.validation_rows() == 0
            || self.validation_rows() == self.rows()
        {
            return Err(CodeError::failed(format!(
                "{component}: the job needs features > 0 and enough rows for both sets ({} rows, {}% validation)",
                self.rows(),
                self.validation_percent
            )));
        }
        Ok(())
    }
}

/// What `validate` outputs: the invocation's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrResult {
    /// Share of validation rows classified correctly.
    pub accuracy: f64,
    /// Rows trained on.
    pub training_rows: u64,
    /// Rows validated on.
    pub validation_rows: u64,
}

/// Registers `lr.load`, `lr.split`, `lr.train` and `lr.validate`.
pub fn register(registry: &mut CodeRegistry) {
    registry
        .register("lr.load", load)
        .register("lr.split", split)
        .register("lr.train", train)
        .register("lr.validate", validate);
}

/// The job travels down the chain of triggers unchanged.
fn job_of(ctx: &Context) -> Result<LrJob, CodeError> {
    let job: LrJob = decode(ctx.name(), ctx.input())?;
    job.check(ctx.name())?;
    Ok(job)
}

/// Generates the data set into `training_set`.
pub fn load(ctx: &mut Context) -> Result<Vec<u8>, CodeError> {
    let job = job_of(ctx)?;
    let mut data = ctx.channel("training_set")?;
    let d = job.features as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(job.seed);
    let hidden: Vec<f32> = (0..=d).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut chunk = vec![0f32; job.chunk_rows() * (d + 1)];
    let mut written = 0u64;
    while written < job.rows() {
        let rows = (job.rows() - written).min(job.chunk_rows() as u64) as usize;
        for row in chunk[..rows * (d + 1)].chunks_exact_mut(d + 1) {
            let mut margin = hidden[d];
            for (x, w) in row[..d].iter_mut().zip(&hidden) {
                *x = rng.random_range(-1.0..1.0);
                margin += *x * w;
            }
            let noise: f32 = rng.random_range(-0.5..0.5);
            row[d] = if margin + noise > 0.0 { 1.0 } else { 0.0 };
        }
        let bytes: &[u8] = bytemuck::cast_slice(&chunk[..rows * (d + 1)]);
        data.write(written * job.row_bytes() as u64, bytes)?;
        written += rows as u64;
    }
    encode(&job)
}

/// Moves the last `validation_percent` of rows to `validation_set` and
/// shrinks `training_set` to the rest.
pub fn split(ctx: &mut Context) -> Result<Vec<u8>, CodeError> {
    let job = job_of(ctx)?;
    let mut training = ctx.channel("training_set")?;
    let mut validation = ctx.channel("validation_set")?;
    let row = job.row_bytes() as u64;
    let first_held_out = (job.rows() - job.validation_rows()) * row;
    let end = job.rows() * row;
    let mut buf = vec![0u8; job.chunk_rows() * row as usize];
    let mut at = first_held_out;
    while at < end {
        let n = ((end - at) as usize).min(buf.len());
        training.read(at, &mut buf[..n])?;
        validation.write(at - first_held_out, &buf[..n])?;
        at += n as u64;
    }
    training.resize(first_held_out)?;
    encode(&job)
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Streams a set in chunks of whole rows, reading each straight into f32
/// storage (no decoding step).
fn for_each_chunk(data: &mut Channel, job: &LrJob, mut each: impl FnMut(&[f32])) -> Result<(), CodeError> {
    let row = job.row_bytes() as u64;
    let end = data.len() / row * row;
    let mut floats = vec![0f32; job.chunk_rows() * (job.features as usize + 1)];
    let mut at = 0u64;
    while at < end {
        let n = ((end - at) as usize).min(floats.len() * 4);
        let chunk = &mut floats[..n / 4];
        data.read(at, bytemuck::cast_slice_mut(chunk))?;
        each(chunk);
        at += n as u64;
    }
    Ok(())
}

/// Trains by mini-batch gradient descent (one batch per chunk) and writes
/// the weights (features, then bias) to `weights`.
pub fn train(ctx: &mut Context) -> Result<Vec<u8>, CodeError> {
    let job = job_of(ctx)?;
    let mut training = ctx.channel("training_set")?;
    let d = job.features as usize;
    let mut weights = vec![0f32; d + 1];
    let mut gradient = vec![0f32; d + 1];
    for _ in 0..job.epochs {
        for_each_chunk(&mut training, &job, |chunk| {
            gradient.iter_mut().for_each(|g| *g = 0.0);
            let rows = chunk.len() / (d + 1);
            for row in chunk.chunks_exact(d + 1) {
                let (x, label) = (&row[..d], row[d]);
                let z = weights[d] + x.iter().zip(&weights[..d]).map(|(a, b)| a * b).sum::<f32>();
                let error = sigmoid(z) - label;
                for (g, xi) in gradient[..d].iter_mut().zip(x) {
                    *g += error * xi;
                }
                gradient[d] += error;
            }
            let step = job.learning_rate / rows.max(1) as f32;
            for (w, g) in weights.iter_mut().zip(&gradient) {
                *w -= step * g;
            }
        })?;
    }
    ctx.channel("weights")?.write(0, bytemuck::cast_slice(&weights))?;
    encode(&job)
}

/// Classifies the validation set with the trained weights.
pub fn validate(ctx: &mut Context) -> Result<Vec<u8>, CodeError> {
    let job = job_of(ctx)?;
    let d = job.features as usize;
    let mut weights = vec![0f32; d + 1];
    ctx.channel("weights")?.read(0, bytemuck::cast_slice_mut(&mut weights))?;
    let mut validation = ctx.channel("validation_set")?;
    let (mut correct, mut total) = (0u64, 0u64);
    for_each_chunk(&mut validation, &job, |chunk| {
        for row in chunk.chunks_exact(d + 1) {
            let z = weights[d] + row[..d].iter().zip(&weights[..d]).map(|(a, b)| a * b).sum::<f32>();
            let predicted = if z > 0.0 { 1.0 } else { 0.0 };
            correct += u64::from(predicted == row[d]);
            total += 1;
        }
    })?;
    encode(&LrResult {
        accuracy: correct as f64 / total.max(1) as f64,
        training_rows: job.rows() - job.validation_rows(),
        validation_rows: total,
    })
}
