Scenario: the region fails
  Given the embedded lab is up
