// A converted model's files in R2: `${prefix}${name}` per file (hymba-manifest.json, stage-*.onnx, ...).

import type { ModelSource } from '../../engine/run/loaded-model.js';

export function r2ModelSource(bucket: R2Bucket, prefix: string): ModelSource {
  return {
    async readText(name) {
      const obj = await bucket.get(prefix + name);
      return obj ? obj.text() : null;
    },
    async readBytes(name) {
      const obj = await bucket.get(prefix + name);
      return obj ? new Uint8Array(await obj.arrayBuffer()) : null;
    },
  };
}
