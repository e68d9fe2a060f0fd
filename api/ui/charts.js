// Charts with uPlot (vendor/uPlot.esm.js, MIT), loaded on first use with a dynamic import:
// when it fails to load, the charts say so and the tables beside them still show the numbers.

import {fmtBytes, fmtNum, h, replaceChildren, stats} from './util.js';

let loading = null;
export function loadUPlot() {
  loading ??= import('./vendor/uPlot.esm.js')
    .then((m) => m.default)
    .catch((e) => {
      console.warn('uPlot did not load; charts are off', e);
      return null;
    });
  return loading;
}

export const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2',
                        '#db2777', '#65a30d', '#ea580c', '#4b5563', '#0d9488', '#9333ea'];

const metricFormat = (metric) => (metric === 'bytes' ? fmtBytes : fmtNum);

// Keeps a chart as wide as its box.
function fit(box, u, height) {
  const ro = new ResizeObserver(() => {
    const w = Math.max(200, Math.floor(box.clientWidth));
    if (Math.abs(w - u.width) > 2) u.setSize({width: w, height});
  });
  ro.observe(box);
  return () => ro.disconnect();
}

function unavailable(box) {
  replaceChildren(box, h('p', {class: 'muted'}, 'Charts are not available (uPlot did not load); the table has the numbers.'));
  return {destroy() {}};
}

// A bar per group: labels[i] with values[i].
export async function barChart(box, {labels, values, metric, title}) {
  const uPlot = await loadUPlot();
  if (!uPlot) return unavailable(box);
  replaceChildren(box);
  const height = 260;
  const fmt = metricFormat(metric);
  const xs = labels.map((_, i) => i);
  const short = (s) => (s.length > 14 ? s.slice(0, 13) + '…' : s);
  const u = new uPlot({
    title,
    width: Math.max(200, box.clientWidth),
    height,
    legend: {show: false},
    cursor: {drag: {x: false, y: false}, points: {show: false}},
    scales: {x: {time: false, range: [-0.6, Math.max(0.6, labels.length - 0.4)]},
             y: {range: (u, min, max) => [0, max > 0 ? max * 1.08 : 1]}},
    axes: [
      {splits: () => xs, values: (u, splits) => splits.map((i) => short(String(labels[i] ?? ''))),
       rotate: labels.length > 6 ? -40 : 0, size: labels.length > 6 ? 80 : 40, gap: 4},
      {values: (u, splits) => splits.map((v) => fmt(v)), size: 70},
    ],
    series: [
      {},
      {label: metric, stroke: PALETTE[0], fill: PALETTE[0] + 'cc', width: 1,
       paths: uPlot.paths.bars({size: [0.7, 80]}), points: {show: false}},
    ],
  }, [xs, values], box);
  stats.chartsDrawn++;
  const unfit = fit(box, u, height);
  return {destroy() { unfit(); u.destroy(); }};
}

// Lines over time: time[] in milliseconds, series [{key, values}].
export async function timeChart(box, {time, series, metric, title}) {
  const uPlot = await loadUPlot();
  if (!uPlot) return unavailable(box);
  replaceChildren(box);
  const height = 280;
  const fmt = metricFormat(metric);
  const u = new uPlot({
    title,
    width: Math.max(200, box.clientWidth),
    height,
    scales: {x: {time: true}, y: {range: (u, min, max) => [0, max > 0 ? max * 1.05 : 1]}},
    axes: [{}, {values: (u, splits) => splits.map((v) => fmt(v)), size: 70}],
    series: [
      {value: (u, v) => (v === null ? '–' : new Date(v * 1000).toISOString().replace('T', ' ').slice(0, 23))},
      ...series.map((s, i) => ({
        label: s.key, stroke: PALETTE[i % PALETTE.length], width: 1.5,
        value: (u, v) => (v === null ? '–' : fmt(v)), points: {show: false},
      })),
    ],
  }, [time.map((t) => t / 1000), ...series.map((s) => s.values)], box);
  stats.chartsDrawn++;
  const unfit = fit(box, u, height);
  return {destroy() { unfit(); u.destroy(); }};
}

// A small line of recent values (the service view's throughput).
export async function sparkline(box, {xs, ys, label}) {
  const uPlot = await loadUPlot();
  if (!uPlot) return unavailable(box);
  replaceChildren(box);
  const height = 140;
  const u = new uPlot({
    width: Math.max(200, box.clientWidth),
    height,
    legend: {show: false},
    cursor: {show: false},
    // At least a minute wide: the first polls are seconds apart.
    scales: {x: {time: true, range: (u, min, max) => [Math.min(min, max - 60), max]},
             y: {range: (u, min, max) => [0, max > 0 ? max * 1.2 : 1]}},
    axes: [{}, {size: 50}],
    series: [{}, {label, stroke: PALETTE[2], fill: PALETTE[2] + '33', width: 1.5, points: {show: false}}],
  }, [xs, ys], box);
  stats.chartsDrawn++;
  const unfit = fit(box, u, height);
  return {
    update(nx, ny) { u.setData([nx, ny]); },
    destroy() { unfit(); u.destroy(); },
  };
}
