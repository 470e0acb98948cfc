import { packageConfig } from '../../tsup.base.ts';

// Scripts, not a library: workspace packages are bundled from their sources so that `bench` and
// `start` run without the other packages having been built.
export default packageConfig({
  entry: ['src/main.ts', 'src/bench.ts'],
  platform: 'node',
  dts: false,
  noExternal: [/^@virtkit\//],
  esbuildOptions(options) {
    options.conditions = ['@virtkit/source'];
  },
});
