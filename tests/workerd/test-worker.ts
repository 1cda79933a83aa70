// The workerd tests' Worker entry (vitest.config.ts): the production Worker (workers/index.ts) with the test
// subclasses of its Durable Objects, which the test project binds SESSIONS and STAGES to.

export { default, MetricsDO, RateLimitDO } from '../../workers/index.js';
export { TestSessionDO, TestStageDO } from './test-objects.js';
