/**
 * The relay's hot-path counts (frames in and out, errors): kept in plain numbers and
 * added to their Prometheus counters on scrape, so every scrape shows exactly what was
 * counted before it, once.
 */
import { describe, expect, it } from 'vitest';
import { createMetrics } from '../../server/metrics.js';
import { metricSample } from '../helpers/http.js';

describe('metrics tallies', () => {
  it('show every count on the next scrape, and count nothing twice', async () => {
    const m = createMetrics();
    const send = m.tallies.framesIn.child('send');
    expect(m.tallies.framesIn.child('send')).toBe(send);
    send.inc();
    send.inc();
    m.tallies.errors.child('RATE_LIMITED').inc();
    m.framesIn.inc({ type: 'send' });
    let text = await m.registry.metrics();
    expect(metricSample(text, 'hermetic_frames_in_total{type="send"}')).toBe(3);
    expect(metricSample(text, 'hermetic_errors_total{code="RATE_LIMITED"}')).toBe(1);
    expect(metricSample(text, 'hermetic_frames_out_total{type="stored_batch"}')).toBeUndefined();
    text = await m.registry.metrics();
    expect(metricSample(text, 'hermetic_frames_in_total{type="send"}')).toBe(3);
    send.inc();
    m.tallies.framesOut.child('stored_batch').inc();
    text = await m.registry.metrics();
    expect(metricSample(text, 'hermetic_frames_in_total{type="send"}')).toBe(4);
    expect(metricSample(text, 'hermetic_frames_out_total{type="stored_batch"}')).toBe(1);
  });
});
