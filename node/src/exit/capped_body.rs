//! Reading an upstream answer's body with a byte cap, chunk by chunk, so that
//! an endless or oversized answer costs the exit at most the cap (plus one
//! chunk) of memory before it is refused.

/// Why a body was not read.
#[derive(Debug)]
pub enum BodyError {
    /// More than `cap` bytes: `len` is the announced length when the answer
    /// declared one (refused before reading), `None` when the cap was crossed
    /// while reading.
    TooLarge {
        /// The announced length, if any.
        len: Option<u64>,
        /// The cap.
        cap: usize,
    },
    /// The connection failed while reading.
    Transport(reqwest::Error),
}

/// Reads `response`'s body, refusing it as soon as it exceeds `cap` bytes.
pub async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, BodyError> {
    if let Some(len) = response.content_length()
        && len > cap as u64
    {
        return Err(BodyError::TooLarge { len: Some(len), cap });
    }
    let announced = response.content_length().map_or(0, |l| l as usize);
    let mut body = Vec::with_capacity(announced.min(cap).min(1 << 20));
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge { len: None, cap });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
