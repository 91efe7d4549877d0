//! Any bytes through both deaggregators: no panic, lenient never loses the record, and strict
//! success agrees with lenient. The first byte picks how the rest is framed, so the fuzzer gets
//! past the magic and the MD5 (which it could never forge) into the protobuf and index checks.
#![no_main]

use bytes::Bytes;
use kinesis_producer::aggregation::{MAGIC, deaggregate, deaggregate_strict};
use libfuzzer_sys::fuzz_target;
use md5::{Digest, Md5};

fuzz_target!(|input: &[u8]| {
    let Some((&mode, body)) = input.split_first() else { return };
    let data = match mode % 3 {
        0 => body.to_vec(),
        1 => [&MAGIC[..], body].concat(),
        _ => [&MAGIC[..], body, Md5::digest(body).as_slice()].concat(),
    };
    let data = Bytes::from(data);
    let lenient = deaggregate("pk", data.clone());
    match deaggregate_strict("pk", data.clone()) {
        Ok(strict) => assert_eq!(strict, lenient),
        Err(err) => {
            let _ = err.to_string();
            assert_eq!(lenient.len(), 1);
            assert_eq!(lenient[0].data, data);
            assert!(!lenient[0].aggregated);
        }
    }
});
