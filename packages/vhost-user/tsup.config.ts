import { packageConfig } from '../../tsup.base.ts';

export default packageConfig({
  platform: 'node',
  entry: { index: 'src/index.ts', 'testing/index': 'src/testing/index.ts' },
});
