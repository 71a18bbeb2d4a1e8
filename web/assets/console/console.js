// custody console script: filled in with the console pages.
