Feature: f
  Scenario: s
    Gievn the embedded lab is up
    When the primary region fails
