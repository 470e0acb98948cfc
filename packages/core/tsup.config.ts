import { packageConfig } from '../../tsup.base.ts';

export default packageConfig({
  entry: { index: 'src/index.ts', 'testing/index': 'src/testing/index.ts' },
});
