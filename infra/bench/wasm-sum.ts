// A hand-written WebAssembly module (SIMD, four f32x4 accumulators) that sums a float array in its own
// memory: the single-core memory bandwidth a WASM kernel can reach, without ORT in the way.

import { time, type Timing } from './stats.js';

// (module
//   (memory (export "mem") 4097)
//   (func (export "sum") (param $bytes i32) (result f32) (local $i i32) (local v128 v128 v128 v128)
//     loop  ;; a += load(i), b += load(i+16), c += load(i+32), d += load(i+48); i += 64; br_if i < bytes
//     end
//     ((a + b) + (c + d)) summed over its 4 lanes))
// prettier-ignore
const lane = (k: number, reg: number): number[] => [0x20, 0x02 + reg, 0x20, 0x01, 0xfd, 0x00, 0x04, k, 0xfd, 0xe4, 0x01, 0x21, 0x02 + reg];
// prettier-ignore
const body = [
  0x02, 0x01, 0x7f, 0x04, 0x7b, // locals: 1 i32, 4 v128
  0x03, 0x40, // loop
  ...lane(0x00, 0),
  ...lane(0x10, 1),
  ...lane(0x20, 2),
  ...lane(0x30, 3),
  0x20, 0x01, 0x41, 0xc0, 0x00, 0x6a, 0x21, 0x01, // i += 64
  0x20, 0x01, 0x20, 0x00, 0x49, 0x0d, 0x00, // br_if 0 (i < bytes)
  0x0b, // end loop
  0x20, 0x02, 0x20, 0x03, 0xfd, 0xe4, 0x01, 0x20, 0x04, 0x20, 0x05, 0xfd, 0xe4, 0x01, 0xfd, 0xe4, 0x01,
  0x22, 0x02, 0xfd, 0x1f, 0x00,
  0x20, 0x02, 0xfd, 0x1f, 0x01, 0x92,
  0x20, 0x02, 0xfd, 0x1f, 0x02, 0x92,
  0x20, 0x02, 0xfd, 0x1f, 0x03, 0x92,
  0x0b,
];
// prettier-ignore
const MODULE = Uint8Array.from([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
  0x01, 0x06, 0x01, 0x60, 0x01, 0x7f, 0x01, 0x7d, // type: (i32) -> f32
  0x03, 0x02, 0x01, 0x00, // function 0 has type 0
  0x05, 0x04, 0x01, 0x00, 0x81, 0x20, // memory: 4097 pages (256 MiB + 64 KiB)
  0x07, 0x0d, 0x02, 0x03, 0x6d, 0x65, 0x6d, 0x02, 0x00, 0x03, 0x73, 0x75, 0x6d, 0x00, 0x00, // exports
  0x0a, body.length + 2, 0x01, body.length, ...body,
]);

export interface WasmSum {
  bytes: number;
  timing: Timing;
  gbps: number;
  checksum: number;
}

export async function wasmSumBandwidth(): Promise<WasmSum> {
  const instance = await WebAssembly.instantiate(await WebAssembly.compile(MODULE));
  const mem = instance.exports.mem as WebAssembly.Memory;
  const sum = instance.exports.sum as (bytes: number) => number;
  const bytes = 256 * 2 ** 20;
  new Float32Array(mem.buffer, 0, bytes / 4).fill(1); // touch every page: untouched pages read as the zero page
  let checksum = 0;
  const timing = await time(
    () => {
      checksum = sum(bytes);
      return Promise.resolve();
    },
    9,
    2,
  );
  return { bytes, timing, gbps: bytes / 1e9 / (timing.median / 1000), checksum };
}
