// Types for the workerd side (Worker, Durable Objects, workerd tests). The root tsconfig includes these
// folders, so the Workers runtime types join the one program (skipLibCheck hides their overlap with DOM).
/// <reference types="@cloudflare/workers-types" />
/// <reference types="@cloudflare/vitest-pool-workers/types" />

declare module '*.wasm' {
  /** precompiled by the bundler (wrangler's CompiledWasm rule): workerd cannot compile bytes at run time */
  const module: WebAssembly.Module;
  export default module;
}
