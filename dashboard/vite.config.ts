/// <reference types="vitest/config" />
import { defineConfig } from 'vite';

// `npm run dev` with MICROPLANE_GATEWAY=http://127.0.0.1:8080 sends every request that is not
// the app's own (the API, /.well-known/…) to that gateway, as the same origin would.
const gateway = process.env.MICROPLANE_GATEWAY;
const own = /^\/(?:$|\?|index\.html|favicon\.svg|@|src\/|node_modules\/)/;

// Served by the gateway at /.dashboard/: every asset URL is relative to index.html.
export default defineConfig({
  base: './',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // No inline scripts or styles: the gateway sends `default-src 'self'`.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
  },
  server: gateway
    ? { proxy: { '/': { target: gateway, bypass: (req) => (own.test(req.url ?? '/') ? req.url : undefined) } } }
    : {},
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});
