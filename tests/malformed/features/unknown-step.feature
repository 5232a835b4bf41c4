Feature: f
  Scenario: s
    Given the embedded lab is up
    When the moon falls on the data centre
